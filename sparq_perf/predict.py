"""Predict: every operation of a decode step, dense, SparQ and its rivals, on one device.

`evaluate` is the vectorized core (numpy arrays broadcast over batch, seq_len, r, k, l);
`predict` resolves a user's settings, checks them, and returns rows (the shared schema)
and a summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import phases as P
from .calibration import Calibration
from .cost import attention as A
from .cost import paper
from .cost import rivals
from .cost.base import PhaseCost, combine
from .cost.layer import layer_costs, prefill_cost, step_costs
from .errors import UserError, closest
from .estimate import Estimate, estimate
from .hardware import Hardware
from .memory import kv_bytes_per_sequence, max_batch, weight_bytes
from .models import Model
from .units import dtype_bytes
from .workload import Workload, settings_for_compression, validate

METHODS = ("dense", "sparq")  # the default pair
# Every method the model knows, with its attention phases (append excluded).
METHOD_PHASES = {
    "dense": P.DENSE_PHASES,
    "sparq": P.SPARQ_PHASES,
    "sparq-1xk": P.SPARQ_PHASES,  # the same kernels with K stored once
    "quest": (P.DENSE_ATTENTION,) + P.QUEST_PHASES,  # dense first layers, Quest on the rest
    **{m: ph for m, ph in rivals.PHASES.items() if m != "quest"},
}
KNOWN_METHODS = tuple(METHOD_PHASES)
METHOD_ALIASES = {"ds": "double-sparsity", "lm-infinite": "streaming-llm", "streamingllm": "streaming-llm",
                  "sparq1xk": "sparq-1xk"}


def parse_methods(text) -> tuple[str, ...]:
    """'sparq, quest' -> ('sparq', 'quest'); aliases resolved, order kept, repeats dropped."""
    names = [t.strip().lower() for t in (text.split(",") if isinstance(text, str) else text)]
    out = []
    for name in names:
        if not name:
            continue
        name = METHOD_ALIASES.get(name, name)
        if name not in METHOD_PHASES:
            raise UserError(f"unknown method {name!r}{closest(name, list(METHOD_PHASES) + list(METHOD_ALIASES))}; "
                            f"known: {', '.join(KNOWN_METHODS)} (aliases: "
                            f"{', '.join(f'{a}={b}' for a, b in METHOD_ALIASES.items())})")
        if name not in out:
            out.append(name)
    if not out:
        raise UserError(f"--method: give at least one of {', '.join(KNOWN_METHODS)}")
    return tuple(out)


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
    params: dict = field(default_factory=dict)  # method -> {'r': ..., 'k': ...} it ran with


def attention_phase_names(method: str) -> tuple[str, ...]:
    """The phases of a method's attention step, append excluded."""
    return METHOD_PHASES[method]


def evaluate(model: Model, hw: Hardware, *, batch, seq_len, r, k, l=0, weight_dtype="bf16", kv_dtype="bf16",
             methods=METHODS, calibration: Calibration | None = None, copy_bandwidth_bytes_per_s=None,
             sparq_impl: A.SparqImpl = A.SparqImpl(), params: dict | None = None,
             impls: dict | None = None) -> Evaluation:
    """All operations of a decode step per method. `r` and `k` serve every method unless
    `params` gives a method its own ({'quest': {'k': 2048}}); `impls` gives a rival its
    switches (`cost.rivals`); SparQ's come from `sparq_impl`."""
    w_bytes, e = dtype_bytes(weight_dtype), dtype_bytes(kv_dtype)
    cdt = compute_dtype(weight_dtype)
    weights = weight_bytes(model, w_bytes)
    shared_ops = layer_costs(model, batch, w_bytes), step_costs(model, batch, w_bytes)
    params, impls = params or {}, impls or {}
    results, summary, used = {}, {}, {}
    for method in methods:
        mr, mk = params.get(method, {}).get("r", r), params.get(method, {}).get("k", k)
        used[method] = {"r": mr, "k": mk}
        wl = Workload(batch, seq_len, model.n_heads, model.n_kv_heads, model.d_head, mr, mk, l, e, 2.0)
        sparq_like = method in ("sparq", "sparq-1xk")
        impl = sparq_impl if sparq_like else impls.get(method)
        kv_seq = kv_bytes_per_sequence(model, seq_len, e, method, sparq_impl.k_transposed, k=mk, r=mr,
                                       impl=None if sparq_like else impl)
        resident = weights + kv_seq * np.asarray(batch, np.float64)

        def est(cost):
            return estimate(cost, hw, compute_dtype=cdt, resident_bytes=resident, calibration=calibration,
                            copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s)

        res = MethodResult()
        for cost in shared_ops[0].values():
            res.add(cost, est(cost), model.n_layers, "layer")
        counts = rivals.phase_counts(method, model.n_layers, impl)
        for cost in A.attention_costs(method, wl, impl).values():
            res.add(cost, est(cost), counts.get(cost.name, model.n_layers), "layer")
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
        formula = PAPER_NAMES.get(method)
        if formula:
            summary[f"{method}.paper_compression"] = paper.compression_ratio(formula, seq_len, model.d_head, mr, mk)
        summary[f"{method}.element_compression"] = rivals.element_ratio(method, seq_len, model.d_head, mr, mk, e, impl)
        if method != "dense" and "dense" in results:
            summary[f"{method}.impl_compression"] = summary[f"{method}.attention_bytes"] / summary["dense.attention_bytes"]
            summary[f"{method}.speedup_attention"] = summary["dense.attention_time_s"] / summary[f"{method}.attention_time_s"]
            summary[f"{method}.speedup_step"] = summary["dense.tpot_s"] / summary[f"{method}.tpot_s"]
    summary["weights_bytes"] = weights
    summary["usable_bytes"] = hw.usable_bytes
    return Evaluation(model, hw, Workload(batch, seq_len, model.n_heads, model.n_kv_heads, model.d_head, r, k, l, e, 2.0),
                      results, summary, used)


# Methods with a formula in the SparQ paper (Table 1): method -> its name in `cost.paper`.
PAPER_NAMES = {"dense": "dense", "sparq": "sparq", "h2o": "h2o", "streaming-llm": "lm-infinite", "flexgen": "flexgen"}


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
    impls: dict | None = None  # method -> its switches (cost.rivals), defaults otherwise


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


USES_R = ("sparq", "sparq-1xk", "double-sparsity", "loki")  # methods with a channel/dimension count r


def method_params(s: Settings, r: int, k: int) -> dict:
    """Each method's r and k: the explicit --r/--k for all, else its own rule for the target
    compression (`cost.rivals.params_for_compression`); checked like the shared ones."""
    out = {}
    for method in s.methods:
        own = rivals.params_for_compression(method, s.model.d_head, s.seq_len, s.compression,
                                            dtype_bytes(s.kv_dtype), (s.impls or {}).get(method))
        mr = r if s.r is not None or method in ("dense", "sparq") else int(own["r"])
        mk = k if s.k is not None or method in ("dense", "sparq") else int(own["k"])
        validate(Workload(s.batch, s.seq_len, s.model.n_heads, s.model.n_kv_heads, s.model.d_head, mr, mk,
                          min(s.l, mk)))
        out[method] = {"r": mr, "k": mk, "reachable": bool(own["reachable"]) or s.k is not None}
    return out


@dataclass
class Prediction:
    settings: Settings
    r: int
    k: int
    l: int
    rows: list
    summary: dict
    methods: tuple = METHODS  # evaluated, dense first as the baseline
    params: dict = field(default_factory=dict)  # method -> {'r', 'k', 'reachable'}
    evaluation: Evaluation | None = None

    def to_dict(self) -> dict:
        s = self.settings
        return {
            "workload": {"model": s.model.name, "device": s.hw.name, "batch": s.batch, "seq_len": s.seq_len,
                         "r": self.r, "k": self.k, "l": self.l, "compression": s.compression,
                         "weight_dtype": s.weight_dtype, "kv_dtype": s.kv_dtype,
                         "calibrated": s.calibration is not None},
            "methods": {m: {"r": int(p["r"]) if m in USES_R else None, "k": int(p["k"]), "reachable": p["reachable"]}
                        for m, p in self.params.items()},
            "summary": {k: _plain(v) for k, v in self.summary.items()},
            "rows": self.rows,
        }


def _plain(v):
    a = np.asarray(v)
    return a.item() if a.size == 1 else a.tolist()


def predict(s: Settings) -> Prediction:
    """Dense is always evaluated, first, as the baseline of every speedup."""
    r, k, l = resolve(s)
    methods = ("dense",) + tuple(m for m in s.methods if m != "dense")
    params = method_params(replace(s, methods=methods), r, k)
    ev = evaluate(s.model, s.hw, batch=s.batch, seq_len=s.seq_len, r=r, k=k, l=l, weight_dtype=s.weight_dtype,
                  kv_dtype=s.kv_dtype, methods=methods, calibration=s.calibration,
                  copy_bandwidth_bytes_per_s=s.copy_bandwidth_bytes_per_s, params=params, impls=s.impls)
    return Prediction(s, r, k, l, rows_from(ev, r=r, k=k, l=l, weight_dtype=s.weight_dtype, kv_dtype=s.kv_dtype),
                      {n: _plain(v) for n, v in ev.summary.items()}, methods, params, ev)


def rows_from(ev: Evaluation, *, r, k, l, weight_dtype, kv_dtype) -> list[dict]:
    """Rows (sparq_perf.rows schema) for a scalar evaluation: the rows of `row_columns` as
    dicts of Python values, None where the whole decode step has no memory/compute/overhead split."""
    cols = row_columns(ev, r=r, k=k, l=l, weight_dtype=weight_dtype, kv_dtype=kv_dtype)
    rows = column_records(cols)
    for row in rows:
        for c in ("memory_time_s", "compute_time_s", "overhead_time_s"):
            if row[c] != row[c]:  # NaN: no split
                row[c] = None
    return rows


def row_columns(ev: Evaluation, *, r, k, l, weight_dtype, kv_dtype) -> dict:
    """Column arrays of the rows (sparq_perf.rows schema; the columns a prediction fills) of an
    evaluation over any broadcast of batch, S, r, k and l: per method, each operation, its
    attention step (append excluded, averaged over layers where phases run on only some of
    them) and the whole decode step (no time split: NaN). Row i*n + j is operation i at
    point j of the n points (C order). Dense and SparQ carry `r` and `k`; a rival its own
    (r None where the method has none)."""
    m, w = ev.model, ev.workload
    shape = np.broadcast_shapes(np.shape(w.batch), np.shape(w.seq_len), np.shape(r), np.shape(k), np.shape(l),
                                *(np.shape(v) for p in ev.params.values() for v in (p["r"], p["k"])))
    ops = []  # (method, phase, scope, count, bytes_read, bytes_written, flops, Estimate or None, time_s)
    blocks = []  # (r, k, number of rows) of each method
    for method, res in ev.methods.items():
        own = ev.params.get(method, {})
        mr, mk = (r, k) if method in ("dense", "sparq") else (own.get("r", r) if method in USES_R else None,
                                                               own.get("k", k))
        for name, (cost, est, count, scope) in res.ops.items():
            ops.append((method, name, scope, count, cost.bytes_read, cost.bytes_written, cost.flops, est, est.time_s))
        parts = [res.ops[n] for n in attention_phase_names(method)]
        share = [count / m.n_layers for _, _, count, _ in parts]  # 1 where every layer runs the phase
        step = combine(P.decode_name(method), [_scaled(c, f) for (c, *_), f in zip(parts, share)])
        est = Estimate(*(sum(getattr(e, t) if f == 1 else getattr(e, t) * f for (_, e, *_), f in zip(parts, share))
                         for t in ("memory_time_s", "compute_time_s", "overhead_time_s")))
        ops.append((method, step.name, "layer", m.n_layers, step.bytes_read, step.bytes_written, step.flops, est,
                    est.time_s))
        flops = sum((c.flops * cnt for c, _, cnt, _ in res.ops.values()), 0.0)
        ops.append((method, "decode_step", "step", 1, res.total_bytes(), 0.0, flops, None, res.total_time_s()))
        blocks.append((mr, mk, len(res.ops) + 2))

    def stack(values):  # one value per op -> (ops x points) flattened
        out = np.empty((len(values),) + shape)
        for i, v in enumerate(values):
            out[i] = v
        return out.reshape(-1)

    def points(v, dtype=None):  # v at each point, flattened
        a = np.asarray(v, dtype)
        return (a if a.shape == shape else np.broadcast_to(a, shape)).reshape(-1)

    def tile(v, times):  # one int per point, the same for `times` ops
        return points(v, np.int64)[None, :].repeat(times, 0).reshape(-1)

    def per_method(i):  # r or k of each method's rows; None (a method without r) stays None
        return np.concatenate([np.full(n * b[2], None, object) if b[i] is None else tile(b[i], b[2]) for b in blocks])

    n_ops, n = len(ops), int(np.prod(shape))
    method, phase, scope, count, b_read, b_written, flops, ests, time = zip(*ops)
    b_read, b_written, flops = stack(b_read), stack(b_written), stack(flops)
    cols = {
        "source": "predicted", "device": ev.hw.name, "model": m.name, "batch": tile(w.batch, n_ops),
        "seq_len": tile(w.seq_len, n_ops), "n_heads": m.n_heads, "n_kv_heads": m.n_kv_heads, "d_head": m.d_head,
        "r": per_method(0), "k": per_method(1), "l": tile(l, n_ops), "kv_dtype": kv_dtype,
        "weight_dtype": weight_dtype,
        "method": np.repeat(method, n), "phase": np.repeat(phase, n), "scope": np.repeat(scope, n),
        "count": np.repeat(np.asarray(count, np.float64), n),
        "bytes_read": b_read, "bytes_written": b_written, "flops": flops,
        "intensity_flop_per_byte": flops / np.maximum(b_read + b_written, 1e-300),
        **{t: stack([np.nan if e is None else getattr(e, t) for e in ests])
           for t in ("memory_time_s", "compute_time_s", "overhead_time_s")},
        "bound": np.concatenate([points("memory" if e is None else e.bound) for e in ests]),
        "time_s": stack(time), "status": "ok",
    }
    return {c: v if isinstance(v, np.ndarray) else np.full(n_ops * n, v) for c, v in cols.items()}


def column_records(cols: dict) -> list[dict]:
    """Equal-length column arrays -> one dict of Python values per row."""
    return [dict(zip(cols, values)) for values in zip(*(np.asarray(v).tolist() for v in cols.values()))]


def _scaled(c: PhaseCost, f) -> PhaseCost:
    if f == 1:
        return c
    return PhaseCost(c.name, {k: v * f for k, v in c.reads.items()}, {k: v * f for k, v in c.writes.items()},
                     c.flops * f, c.launches * f)
