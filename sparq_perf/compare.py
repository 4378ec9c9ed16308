"""Methods side by side at one target compression: the settings that reach it, attention
bytes and time, whole-step speedup, KV memory and the largest batch, on one device.

`compare_rows` is what a report calls: one row per (method, S), vectorized over S.
"""
from __future__ import annotations

import numpy as np

from .calibration import Calibration
from .cost import rivals
from .cost.attention import SparqImpl
from .hardware import Hardware
from .models import Model
from .predict import USES_R, Evaluation, evaluate
from .units import dtype_bytes

RIVALS = ("sparq", "sparq-1xk", "quest", "double-sparsity", "loki", "h2o", "streaming-llm")
LABELS = {"dense": "dense", "sparq": "SparQ", "sparq-1xk": "SparQ 1xK", "quest": "Quest",
          "double-sparsity": "Double Sparsity", "loki": "Loki", "h2o": "H2O",
          "streaming-llm": "StreamingLLM", "flexgen": "FlexGen top-k"}

# Columns of a comparison row -> meaning (SI units in the names).
COLUMNS = {
    "method": "attention method", "label": "its name for people", "device": "hardware profile",
    "model": "model architecture", "batch": "sequences decoded together", "seq_len": "KV length S",
    "compression": "target transfer ratio c", "params": "the method's settings, in words",
    "r": "channels / dimensions / query components (where the method has them)",
    "k": "positions fetched, or kept by eviction methods", "reachable": "whether the settings reach c",
    "element_compression": "leading-order KV elements moved over dense's",
    "impl_compression": "implementation attention bytes over dense's (append excluded)",
    "attention_bytes": "attention bytes per layer (mean over layers), whole batch",
    "attention_time_s": "predicted attention time per layer (mean over layers)",
    "speedup_attention": "dense attention time over the method's",
    "tpot_s": "predicted whole decode step", "speedup_step": "dense step time over the method's",
    "kv_bytes_per_sequence": "KV residency of one sequence, all layers",
    "kv_bytes": "KV residency of the batch", "fits": "weights + KV fit the usable memory",
    "max_batch": "largest batch that fits", "evicts": "tokens are dropped from the cache",
    "note": "caveats",
}


def params_text(method: str, r, k, impl=None) -> str:
    """A method's settings in a few characters (the caveats are in `note`)."""
    impl = impl or rivals.DEFAULT_IMPLS.get(method)
    r, k = int(r), int(k)
    if method == "dense":
        return "all S"
    if method in ("sparq", "sparq-1xk", "loki"):
        return f"r={r} k={k}"
    if method == "quest":
        return f"P={impl.page_size} k={k}"
    if method == "double-sparsity":
        return f"r={r}x{impl.label_bits}b k={k}"
    if method == "streaming-llm":
        return f"k={k} ({impl.sinks} sinks)"
    return f"k={k}"


def _note(method: str, reachable: bool, impl=None) -> str:
    impl, notes = impl or rivals.DEFAULT_IMPLS.get(method), []
    if method in rivals.EVICTION_METHODS:
        notes.append(rivals.EVICTION_NOTE)
    if not reachable:
        notes.append("cannot reach the target: " + ("page metadata alone is 1/P of dense" if method == "quest"
                                                    else "exact scores read all of K"))
    if method == "quest":
        notes.append(f"k counts positions in whole pages; its first {impl.dense_layers} layers run dense attention, "
                     "counted in its bytes and time")
    if method == "sparq":
        notes.append("K stored twice (K and K^T), v_bar in fp32")
    if method == "sparq-1xk":
        notes.append("K stored once: each of the r scattered K elements per position costs a whole sector")
    if method == "double-sparsity":
        notes.append(f"r offline-calibrated channels in a {impl.label_bits}-bit label cache")
    if method == "loki":
        notes.append("K stored once, PCA-rotated: the first r dims of each K row cost whole sectors, read strided")
    if method == "h2o":
        notes.append("k kept positions: heavy hitters by accumulated score + recent")
    return "; ".join(notes)


def comparison_from(ev: Evaluation, compression: float, reachable: dict | None = None, impls: dict | None = None
                    ) -> list[dict]:
    """Comparison rows from an evaluation (dense among its methods), one per (method, S)."""
    sm, reachable, impls = ev.summary, reachable or {}, impls or {}
    S = np.atleast_1d(np.asarray(ev.workload.seq_len))
    rows = []
    for method in ev.methods:
        p = ev.params[method]
        impl = impls.get(method)
        per_s = lambda key, default=np.nan: np.broadcast_to(np.asarray(sm.get(f"{method}.{key}", default)), S.shape)
        r, k = np.broadcast_to(p["r"], S.shape), np.broadcast_to(p["k"], S.shape)
        reach = np.broadcast_to(reachable.get(method, True), S.shape)
        kv = per_s("kv_bytes")
        for i, s in enumerate(S):
            rows.append({
                "method": method, "label": LABELS.get(method, method), "device": ev.hw.name, "model": ev.model.name,
                "batch": int(np.asarray(ev.workload.batch)), "seq_len": int(s), "compression": float(compression),
                "params": params_text(method, r[i], k[i], impl),
                "r": int(r[i]) if method in USES_R else None, "k": int(k[i]) if method != "dense" else int(s),
                "reachable": bool(reach[i]),
                "element_compression": float(per_s("element_compression")[i]),
                "impl_compression": 1.0 if method == "dense" else float(per_s("impl_compression")[i]),
                "attention_bytes": float(per_s("attention_bytes")[i]),
                "attention_time_s": float(per_s("attention_time_s")[i]),
                "speedup_attention": 1.0 if method == "dense" else float(per_s("speedup_attention")[i]),
                "tpot_s": float(per_s("tpot_s")[i]),
                "speedup_step": 1.0 if method == "dense" else float(per_s("speedup_step")[i]),
                "kv_bytes_per_sequence": float(kv[i]) / float(np.asarray(ev.workload.batch)),
                "kv_bytes": float(kv[i]), "fits": bool(per_s("fits")[i]), "max_batch": int(per_s("max_batch")[i]),
                "evicts": method in rivals.EVICTION_METHODS, "note": _note(method, bool(reach[i]), impl),
            })
    return rows


def compare_rows(model: Model, hw: Hardware, *, seq_len, batch: int = 1, compression: float = 1 / 8,
                 methods=RIVALS, weight_dtype: str = "bf16", kv_dtype: str = "bf16",
                 calibration: Calibration | None = None, copy_bandwidth_bytes_per_s: float | None = None,
                 impls: dict | None = None, sparq_impl: SparqImpl = SparqImpl()) -> list[dict]:
    """Each method at its own settings for `compression` (`cost.rivals.params_for_compression`),
    dense as the baseline, over a scalar or 1-D grid of S: rows with `COLUMNS`."""
    S = np.atleast_1d(np.asarray(seq_len, np.int64))
    methods = ("dense",) + tuple(m for m in methods if m != "dense")
    impls = impls or {}
    own = {m: rivals.params_for_compression(m, model.d_head, S, compression, dtype_bytes(kv_dtype), impls.get(m))
           for m in methods}
    ev = evaluate(model, hw, batch=batch, seq_len=S, r=own["dense"]["r"], k=own["dense"]["k"],
                  weight_dtype=weight_dtype, kv_dtype=kv_dtype, methods=methods, calibration=calibration,
                  copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s, sparq_impl=sparq_impl,
                  params={m: {"r": p["r"], "k": p["k"]} for m, p in own.items()}, impls=impls)
    return comparison_from(ev, compression, {m: p["reachable"] for m, p in own.items()}, impls)
