"""Predict: every operation of a decode step, dense and SparQ, on one device.

`evaluate` is the vectorized core (numpy arrays broadcast over batch, seq_len, r, k, l);
`predict` resolves a user's settings, checks them, and returns rows (the shared schema)
and a summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import phases as P
from .calibration import Calibration
from .cost import attention as A
from .cost import paper
from .cost.base import PhaseCost, combine
from .cost.layer import layer_costs, prefill_cost, step_costs
from .errors import UserError
from .estimate import Estimate, estimate
from .hardware import Hardware
from .memory import kv_bytes_per_sequence, max_batch, weight_bytes
from .models import Model
from .units import dtype_bytes
from .workload import Workload, settings_for_compression, validate

METHODS = ("dense", "sparq")


def compute_dtype(weight_dtype: str) -> str:
    """Matmuls run in fp32 for fp32 weights, fp16 for fp16, otherwise bf16 (dequantised)."""
    return weight_dtype if weight_dtype in ("fp32", "fp16") else "bf16"


@dataclass
class MethodResult:
    """One method's operations: name -> (cost, estimate, runs per step, scope)."""

    ops: dict = field(default_factory=dict)

    def add(self, cost: PhaseCost, est: Estimate, count, scope: str) -> None:
        self.ops[cost.name] = (cost, est, count, scope)

    def total_time_s(self, names=None):
        return sum((est.time_s * count for n, (c, est, count, s) in self.ops.items() if names is None or n in names),
                   np.float64(0.0))

    def total_bytes(self, names=None):
        return sum((c.bytes * count for n, (c, est, count, s) in self.ops.items() if names is None or n in names),
                   np.float64(0.0))


@dataclass
class Evaluation:
    model: Model
    hw: Hardware
    workload: Workload
    methods: dict  # method -> MethodResult
    summary: dict  # name -> array or scalar, SI units


def attention_phase_names(method: str) -> tuple[str, ...]:
    """The phases of a method's attention step, append excluded."""
    return P.DENSE_PHASES if method == "dense" else P.SPARQ_PHASES


def evaluate(model: Model, hw: Hardware, *, batch, seq_len, r, k, l=0, weight_dtype="bf16", kv_dtype="bf16",
             methods=METHODS, calibration: Calibration | None = None, copy_bandwidth_bytes_per_s=None,
             sparq_impl: A.SparqImpl = A.SparqImpl()) -> Evaluation:
    w_bytes, e = dtype_bytes(weight_dtype), dtype_bytes(kv_dtype)
    wl = Workload(batch, seq_len, model.n_heads, model.n_kv_heads, model.d_head, r, k, l, e, 2.0)
    cdt = compute_dtype(weight_dtype)
    weights = weight_bytes(model, w_bytes)
    shared_ops = layer_costs(model, batch, w_bytes), step_costs(model, batch, w_bytes)
    results, summary = {}, {}
    for method in methods:
        kv_seq = kv_bytes_per_sequence(model, seq_len, e, method, sparq_impl.k_transposed)
        resident = weights + kv_seq * np.asarray(batch, np.float64)

        def est(cost):
            return estimate(cost, hw, compute_dtype=cdt, resident_bytes=resident, calibration=calibration,
                            copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s)

        res = MethodResult()
        for cost in shared_ops[0].values():
            res.add(cost, est(cost), model.n_layers, "layer")
        attn = A.attention_costs(method, wl, sparq_impl if method == "sparq" else None)
        for cost in attn.values():
            res.add(cost, est(cost), model.n_layers, "layer")
        for cost in shared_ops[1].values():
            res.add(cost, est(cost), 1, "step")
        results[method] = res
        names = attention_phase_names(method)
        summary[f"{method}.attention_bytes"] = res.total_bytes(names) / model.n_layers
        summary[f"{method}.attention_time_s"] = res.total_time_s(names) / model.n_layers
        summary[f"{method}.step_bytes"] = res.total_bytes()
        summary[f"{method}.tpot_s"] = res.total_time_s()
        summary[f"{method}.tokens_per_s_per_sequence"] = 1.0 / summary[f"{method}.tpot_s"]
        summary[f"{method}.tokens_per_s"] = np.asarray(batch) / summary[f"{method}.tpot_s"]
        summary[f"{method}.kv_bytes"] = kv_seq * np.asarray(batch, np.float64)
        summary[f"{method}.memory_bytes"] = resident
        summary[f"{method}.fits"] = resident <= hw.usable_bytes
        summary[f"{method}.over_bytes"] = np.maximum(0.0, resident - hw.usable_bytes)
        summary[f"{method}.max_batch"] = max_batch(hw.usable_bytes, weights, kv_seq)
        pre = prefill_cost(model, batch, seq_len, w_bytes, e, transposed_key_copy=(method == "sparq" and sparq_impl.k_transposed))
        summary[f"{method}.prefill_time_s"] = estimate(pre, hw, compute_dtype=cdt, resident_bytes=resident,
                                                       copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s).time_s
        summary[f"{method}.paper_compression"] = paper.compression_ratio(method, seq_len, model.d_head, r, k)
        if method != "dense" and "dense" in results:
            summary[f"{method}.impl_compression"] = summary[f"{method}.attention_bytes"] / summary["dense.attention_bytes"]
            summary[f"{method}.speedup_attention"] = summary["dense.attention_time_s"] / summary[f"{method}.attention_time_s"]
            summary[f"{method}.speedup_step"] = summary["dense.tpot_s"] / summary[f"{method}.tpot_s"]
    summary["weights_bytes"] = weights
    summary["usable_bytes"] = hw.usable_bytes
    return Evaluation(model, hw, wl, results, summary)


# ----------------------------------------------------------------------------------------
# Resolving user settings

@dataclass(frozen=True)
class Settings:
    model: Model
    hw: Hardware
    batch: int = 1
    seq_len: int = 4096
    compression: float = 1 / 8
    r: int | None = None
    k: int | str | None = None  # a count or a fraction of S ('S/16', '1/16')
    l: int = 0
    weight_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    methods: tuple = METHODS
    calibration: Calibration | None = None
    copy_bandwidth_bytes_per_s: float | None = None


def resolve_k(k, seq_len: int) -> int:
    """k as a count ('128'), or a fraction of S ('S/16', '1/16', '0.0625')."""
    if isinstance(k, int):
        return k
    text = str(k).strip().replace(" ", "")
    if text.upper().startswith("S/"):
        text = "1/" + text[2:]
    try:
        if "/" in text or "." in text:
            num, _, den = text.partition("/")
            frac = float(num) / float(den) if den else float(num)
            return max(1, int(seq_len * frac))
        return int(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"--k: cannot read {k!r}; give a count (128) or a fraction of S (S/16)") from None


def resolve(s: Settings) -> tuple[int, int, int]:
    """(r, k, l) from the compression target and any explicit overrides, checked."""
    r_c, k_c = settings_for_compression(s.model.d_head, s.seq_len, s.compression)
    r = int(s.r) if s.r is not None else int(r_c)
    k = resolve_k(s.k, s.seq_len) if s.k is not None else int(k_c)
    validate(Workload(s.batch, s.seq_len, s.model.n_heads, s.model.n_kv_heads, s.model.d_head, r, k, s.l))
    return r, k, int(s.l)


@dataclass
class Prediction:
    settings: Settings
    r: int
    k: int
    l: int
    rows: list
    summary: dict

    def to_dict(self) -> dict:
        s = self.settings
        return {
            "workload": {"model": s.model.name, "device": s.hw.name, "batch": s.batch, "seq_len": s.seq_len,
                         "r": self.r, "k": self.k, "l": self.l, "compression": s.compression,
                         "weight_dtype": s.weight_dtype, "kv_dtype": s.kv_dtype,
                         "calibrated": s.calibration is not None},
            "summary": {k: _plain(v) for k, v in self.summary.items()},
            "rows": self.rows,
        }


def _plain(v):
    a = np.asarray(v)
    return a.item() if a.size == 1 else a.tolist()


def predict(s: Settings) -> Prediction:
    r, k, l = resolve(s)
    ev = evaluate(s.model, s.hw, batch=s.batch, seq_len=s.seq_len, r=r, k=k, l=l, weight_dtype=s.weight_dtype,
                  kv_dtype=s.kv_dtype, methods=s.methods, calibration=s.calibration,
                  copy_bandwidth_bytes_per_s=s.copy_bandwidth_bytes_per_s)
    return Prediction(s, r, k, l, rows_from(ev, r=r, k=k, l=l, weight_dtype=s.weight_dtype, kv_dtype=s.kv_dtype),
                      {n: _plain(v) for n, v in ev.summary.items()})


def rows_from(ev: Evaluation, *, r, k, l, weight_dtype, kv_dtype) -> list[dict]:
    """Rows (sparq_perf.rows schema) for a scalar evaluation: each operation, each method's
    attention step (append excluded) and the whole decode step."""
    m, w = ev.model, ev.workload
    base = {"source": "predicted", "device": ev.hw.name, "model": m.name, "batch": int(w.batch),
            "seq_len": int(w.seq_len), "n_heads": m.n_heads, "n_kv_heads": m.n_kv_heads, "d_head": m.d_head,
            "r": int(r), "k": int(k), "l": int(l), "kv_dtype": kv_dtype, "weight_dtype": weight_dtype}
    rows = []
    for method, res in ev.methods.items():
        for name, (cost, est, count, scope) in res.ops.items():
            rows.append(_row(base, method, name, scope, count, cost, est))
        step = P.decode_name(method)
        parts = [res.ops[n] for n in attention_phase_names(method)]
        cost = combine(step, [c for c, *_ in parts])
        est = Estimate(sum(e.memory_time_s for _, e, *_ in parts), sum(e.compute_time_s for _, e, *_ in parts),
                       sum(e.overhead_time_s for _, e, *_ in parts))
        rows.append(_row(base, method, step, "layer", m.n_layers, cost, est))
        total = PhaseCost("decode_step", {"all": res.total_bytes()}, {}, sum(c.flops * n for c, _, n, _ in res.ops.values()))
        t = res.total_time_s()
        rows.append({**_row(base, method, "decode_step", "step", 1, total, Estimate(t, 0.0, 0.0)),
                     "bytes_written": 0.0, "bound": "memory", "memory_time_s": None, "compute_time_s": None,
                     "overhead_time_s": None})
    return rows


def _row(base, method, phase, scope, count, cost: PhaseCost, est: Estimate) -> dict:
    return {**base, "method": method, "phase": phase, "scope": scope, "count": float(count),
            "bytes_read": float(cost.bytes_read), "bytes_written": float(cost.bytes_written),
            "flops": float(np.asarray(cost.flops)), "intensity_flop_per_byte": float(cost.intensity_flop_per_byte),
            "memory_time_s": float(est.memory_time_s), "compute_time_s": float(est.compute_time_s),
            "overhead_time_s": float(est.overhead_time_s), "bound": str(est.bound), "time_s": float(est.time_s),
            "status": "ok"}
