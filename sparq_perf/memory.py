"""Memory residency: weights, KV cache per method (SparQ keeps K twice and v_bar in fp32;
Quest adds page min/max; Double Sparsity a label cache; eviction methods keep only k
positions), fit and the largest batch that fits."""
from __future__ import annotations

import numpy as np

from .cost.attention import STAT_BYTES
from .cost.rivals import DEFAULT_IMPLS, label_bytes
from .models import Model


def weight_bytes(m: Model, w_bytes: float) -> float:
    return m.n_params * w_bytes


def kv_terms_per_sequence(m: Model, seq_len, kv_bytes: float, method: str = "dense", *, k=None, r=None,
                          impl=None, k_transposed: bool = True) -> dict:
    """Named KV-cache residency of one sequence of length S over all layers, in bytes.

    k and r are the method's settings (k: positions kept by eviction methods; r: Double
    Sparsity's label channels); impl its switches (defaults as in `cost.rivals`).
    """
    S = np.asarray(seq_len, np.float64)
    L, row = m.n_layers, m.n_kv_heads * m.d_head * kv_bytes
    impl = impl or DEFAULT_IMPLS.get(method)
    positions = S
    if method in ("h2o", "streaming-llm"):
        positions = np.minimum(np.asarray(k, np.float64), S)
    terms = {"K": L * positions * row, "V": L * positions * row}
    if method == "sparq" and k_transposed:
        terms["KT"] = L * S * row
    if method in ("sparq", "sparq-1xk"):
        terms["v_bar"] = L * m.n_kv_heads * m.d_head * STAT_BYTES + 0.0 * S
    elif method == "quest":
        quest_layers = L - min(impl.dense_layers, L)
        terms["page_minmax"] = quest_layers * np.ceil(S / impl.page_size) * 2 * row
    elif method == "double-sparsity":
        terms["label_cache"] = L * S * m.n_kv_heads * np.asarray(r, np.float64) * label_bytes(impl)
    elif method == "h2o":
        tracked = positions if impl.bookkeeping == "cache" else S
        terms["acc_scores"] = L * tracked * m.n_kv_heads * impl.score_bytes
    return terms


def kv_bytes_per_sequence(m: Model, seq_len, kv_bytes: float, method: str = "dense", k_transposed: bool = True,
                          **params):
    """KV cache bytes of one sequence of length S over all layers."""
    terms = kv_terms_per_sequence(m, seq_len, kv_bytes, method, k_transposed=k_transposed, **params)
    return sum(terms.values(), np.float64(0.0))


def max_batch(usable_bytes: float, weights: float, kv_per_sequence):
    """The largest batch whose weights + KV fit; 0 when not even one sequence fits."""
    free = usable_bytes - weights
    return np.maximum(0, np.floor(free / np.asarray(kv_per_sequence))).astype(np.int64)
