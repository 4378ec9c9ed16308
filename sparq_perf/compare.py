"""Methods side by side at one target compression: the settings that reach it, attention
bytes and time, whole-step speedup, KV memory and the largest batch, on one device.

`compare_columns` is what a report calls: one row per (method, compression, batch, S) as
column arrays, vectorized over all three (and over devices); `compare_rows` gives the same
rows as dicts.
"""
from __future__ import annotations

import numpy as np

from .calibration import Calibration
from .cost import rivals
from .cost.attention import SparqImpl
from .hardware import Hardware
from .models import Model
from .predict import USES_R, Evaluation, column_records, evaluate
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


def note_text(method: str, reachable: bool, impl=None) -> str:
    """A method's caveats at its settings, in words."""
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
    """Comparison rows from an evaluation (dense among its methods): `comparison_columns` as dicts."""
    return column_records(comparison_columns(ev, compression, reachable, impls))


def comparison_columns(ev: Evaluation | list[Evaluation], compression, reachable: dict | None = None,
                       impls: dict | None = None) -> dict:
    """Column arrays (`COLUMNS`) of the comparison rows of an evaluation (dense among its methods)
    over any broadcast of compression, batch and S, method by method, each point in C order;
    `ev` may also be several evaluations of the same workload and settings on other devices
    (their rows one device after another)."""
    evs = [ev] if isinstance(ev, Evaluation) else list(ev)
    w, params, reachable, impls = evs[0].workload, evs[0].params, reachable or {}, impls or {}
    shape = np.broadcast_shapes(np.shape(compression), np.shape(w.batch), np.shape(w.seq_len),
                                *(np.shape(v) for p in params.values() for v in (p["r"], p["k"])),
                                *(np.shape(v) for v in reachable.values()))

    def flat(values, dtype=np.float64):
        a = np.asarray(values, dtype)
        return (a if a.shape == shape else np.broadcast_to(a, shape)).reshape(-1)

    def column(v):  # a value the same at every point -> its column (None: an object column)
        return v if isinstance(v, np.ndarray) else np.full(n, v, object if v is None else None)

    S, B, n = flat(w.seq_len, np.int64), flat(w.batch, np.int64), int(np.prod(shape))
    settings = {}  # method -> the columns its settings alone decide, the same on every device
    for method, p in params.items():
        impl, dense = impls.get(method), method == "dense"
        r, k, reach = flat(p["r"], np.int64), flat(p["k"], np.int64), flat(reachable.get(method, True), bool)
        settings[method] = {
            "method": method, "label": LABELS.get(method, method), "batch": B, "seq_len": S,
            "compression": flat(compression), "params": _each(lambda a, b: params_text(method, a, b, impl), r, k),
            "r": r if method in USES_R else None, "k": S if dense else k, "reachable": reach,
            "evicts": method in rivals.EVICTION_METHODS,
            "note": _each(lambda a: note_text(method, bool(a), impl), reach),
        }
    parts = []
    for e in evs:
        for method in e.methods:
            sm, dense = e.summary, method == "dense"
            per_point = lambda key, default=np.nan: flat(sm.get(f"{method}.{key}", default))  # noqa: E731
            kv = per_point("kv_bytes")
            parts.append({
                **settings[method], "device": e.hw.name, "model": e.model.name,
                "element_compression": per_point("element_compression"),
                "impl_compression": flat(1.0) if dense else per_point("impl_compression"),
                "attention_bytes": per_point("attention_bytes"), "attention_time_s": per_point("attention_time_s"),
                "speedup_attention": flat(1.0) if dense else per_point("speedup_attention"),
                "tpot_s": per_point("tpot_s"), "speedup_step": flat(1.0) if dense else per_point("speedup_step"),
                "kv_bytes_per_sequence": kv / B, "kv_bytes": kv, "fits": flat(sm[f"{method}.fits"], bool),
                "max_batch": flat(sm[f"{method}.max_batch"], np.int64),
            })
    return {c: np.concatenate([column(p[c]) for p in parts]) for c in COLUMNS}


def _each(fn, *arrays) -> np.ndarray:
    """fn at each point of equal-length arrays, called once per distinct combination."""
    memo = {}
    for key in zip(*(a.tolist() for a in arrays)):
        if key not in memo:
            memo[key] = fn(*key)
    return np.array([memo[key] for key in zip(*(a.tolist() for a in arrays))])


def compare_columns(model: Model, hw: Hardware | list[Hardware], *, seq_len, batch=1, compression=1 / 8,
                    methods=RIVALS, weight_dtype: str = "bf16", kv_dtype: str = "bf16",
                    calibration: Calibration | None = None, copy_bandwidth_bytes_per_s: float | None = None,
                    impls: dict | None = None, sparq_impl: SparqImpl = SparqImpl()) -> dict:
    """Each method at its own settings for each compression (`cost.rivals.params_for_compression`),
    dense as the baseline, over the grid compression x batch x S (each a scalar or 1-D), on a
    device `hw` or several: `comparison_columns`, rows device by device, then method by method,
    then compression, batch and S (C order)."""
    S = np.atleast_1d(np.asarray(seq_len, np.int64))
    B = np.asarray(batch, np.int64)[:, None] if np.ndim(batch) else batch  # batch x S where batch is 1-D
    several = np.ndim(compression) > 0  # then compression x (batch x) S
    C = np.asarray(compression, np.float64).reshape((-1,) + (1,) * max(np.ndim(B), 1)) if several else compression
    methods = ("dense",) + tuple(m for m in methods if m != "dense")
    impls = impls or {}
    own = {}
    for m in methods:
        each = [rivals.params_for_compression(m, model.d_head, S, c, dtype_bytes(kv_dtype), impls.get(m))
                for c in (C.reshape(-1) if several else [compression])]
        own[m] = {v: np.stack([np.broadcast_to(p[v], S.shape) for p in each]).reshape(C.shape[:-1] + S.shape)
                  if several else each[0][v] for v in each[0]}
    evs = [evaluate(model, h, batch=B, seq_len=S, r=own["dense"]["r"], k=own["dense"]["k"],
                    weight_dtype=weight_dtype, kv_dtype=kv_dtype, methods=methods, calibration=calibration,
                    copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s, sparq_impl=sparq_impl,
                    params={m: {"r": p["r"], "k": p["k"]} for m, p in own.items()}, impls=impls)
           for h in ([hw] if isinstance(hw, Hardware) else hw)]
    return comparison_columns(evs, C, {m: p["reachable"] for m, p in own.items()}, impls)


def compare_rows(model: Model, hw: Hardware | list[Hardware], *, seq_len, batch=1, compression=1 / 8,
                 methods=RIVALS, weight_dtype: str = "bf16", kv_dtype: str = "bf16",
                 calibration: Calibration | None = None, copy_bandwidth_bytes_per_s: float | None = None,
                 impls: dict | None = None, sparq_impl: SparqImpl = SparqImpl()) -> list[dict]:
    """Each method at its own settings for `compression`, dense as the baseline, over a scalar
    or 1-D grid of S (batch and compression: a scalar or 1-D too): `compare_columns` as rows
    with `COLUMNS`."""
    return column_records(compare_columns(model, hw, seq_len=seq_len, batch=batch, compression=compression,
                                          methods=methods, weight_dtype=weight_dtype, kv_dtype=kv_dtype,
                                          calibration=calibration,
                                          copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s, impls=impls,
                                          sparq_impl=sparq_impl))
