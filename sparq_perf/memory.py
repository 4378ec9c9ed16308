"""Memory residency: weights, KV cache (SparQ keeps K twice and v_bar in fp32), fit and
the largest batch that fits."""
from __future__ import annotations

import numpy as np

from .cost.attention import STAT_BYTES
from .models import Model


def weight_bytes(m: Model, w_bytes: float) -> float:
    return m.n_params * w_bytes


def kv_bytes_per_sequence(m: Model, seq_len, kv_bytes: float, method: str = "dense", k_transposed: bool = True):
    """KV cache bytes of one sequence of length S over all layers."""
    S = np.asarray(seq_len, np.float64)
    row = m.n_kv_heads * m.d_head * kv_bytes
    copies = 3.0 if (method == "sparq" and k_transposed) else 2.0
    extra = m.n_kv_heads * m.d_head * STAT_BYTES if method == "sparq" else 0.0  # v_bar
    return m.n_layers * (copies * S * row + extra)


def max_batch(usable_bytes: float, weights: float, kv_per_sequence):
    """The largest batch whose weights + KV fit; 0 when not even one sequence fits."""
    free = usable_bytes - weights
    return np.maximum(0, np.floor(free / np.asarray(kv_per_sequence))).astype(np.int64)
