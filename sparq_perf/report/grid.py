"""The prediction grid the report shows, as rows of the shared schema (one DataFrame).

`predict.rows_from` makes the rows of one point; a grid of thousands of points is built
here column-wise from one vectorized `evaluate` per (model, device, SparQ setting), with
the same columns and values (tests/test_report.py checks them against `predict`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import phases as P
from ..cost.base import combine
from ..estimate import Estimate
from ..hardware import builtin_profiles
from ..models import builtin_models
from ..predict import METHODS, attention_phase_names, evaluate
from ..rows import COLUMNS
from ..workload import settings_for_compression

DEFAULT_MODELS = ("llama2-7b", "llama3-8b", "mistral-7b", "llama2-70b")
DEFAULT_BATCHES = (1, 8, 64)
DEFAULT_SEQ_LENS = tuple(2**i for i in range(10, 18))  # 1k .. 128k positions


@dataclass(frozen=True)
class Setting:
    """A SparQ setting: a target compression c (r = d_h*c, k = S*c/2) or a fixed (r, k)."""

    label: str
    compression: float | None = None
    r: int | None = None
    k: int | None = None

    def rk(self, d_head, seq_len):
        """(r, k) arrays of this setting at each (d_head, seq_len)."""
        shape = np.broadcast(np.asarray(d_head), np.asarray(seq_len)).shape
        if self.compression is not None:
            r, k = settings_for_compression(d_head, seq_len, self.compression)
        else:
            r, k = self.r, self.k
        return np.broadcast_to(r, shape).astype(np.int64), np.broadcast_to(k, shape).astype(np.int64)


SETTINGS = (
    Setting("1/2", compression=1 / 2),
    Setting("1/4", compression=1 / 4),
    Setting("1/8", compression=1 / 8),
    Setting("r=32, k=128", r=32, k=128),
)


def grid_rows(models=DEFAULT_MODELS, devices=None, batches=DEFAULT_BATCHES, seq_lens=DEFAULT_SEQ_LENS,
              settings=SETTINGS, weight_dtype="bf16", kv_dtype="bf16") -> pd.DataFrame:
    """Predicted rows for every (model, device, batch, S, setting); devices None = all profiles.

    Points a setting cannot run (k > S) are left out; a point two settings share appears once.
    """
    profiles, known = builtin_profiles(), builtin_models()
    devices = list(profiles) if devices is None else list(devices)
    B = np.asarray(batches, np.int64)[:, None]
    parts = []
    for model in (known[m] for m in models):
        for s in settings:
            r, k = s.rk(model.d_head, np.asarray(seq_lens, np.int64))
            ok = k <= np.asarray(seq_lens)
            S, r, k = np.asarray(seq_lens, np.int64)[ok][None, :], r[ok][None, :], k[ok][None, :]
            for dev in devices:
                ev = evaluate(model, profiles[dev], batch=B, seq_len=S, r=r, k=k, l=0,
                              weight_dtype=weight_dtype, kv_dtype=kv_dtype)
                parts.append(_columns(ev, r, k, weight_dtype, kv_dtype))
    df = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in COLUMNS})
    key = ["source", "method", "phase", "device", "model", "batch", "seq_len", "r", "k", "l"]
    return df.drop_duplicates(key, ignore_index=True)


def _columns(ev, r, k, weight_dtype, kv_dtype) -> dict:
    """Column arrays of the rows of a vectorized evaluation over (batch, S), the values
    `predict.rows_from` gives each point."""
    m, w = ev.model, ev.workload
    shape = np.broadcast(w.batch, w.seq_len, r, k).shape
    ops = []  # (method, phase, scope, count, bytes_read, bytes_written, flops, Estimate or None, time_s)
    for method in METHODS:
        res = ev.methods[method]
        for name, (cost, est, count, scope) in res.ops.items():
            ops.append((method, name, scope, count, cost.bytes_read, cost.bytes_written, cost.flops, est, est.time_s))
        parts = [res.ops[p] for p in attention_phase_names(method)]
        step = combine(P.decode_name(method), [c for c, *_ in parts])
        est = Estimate(*(sum(getattr(e, f) for _, e, *_ in parts) for f in
                         ("memory_time_s", "compute_time_s", "overhead_time_s")))
        ops.append((method, step.name, "layer", m.n_layers, step.bytes_read, step.bytes_written, step.flops, est,
                    est.time_s))
        flops = sum((c.flops * cnt for c, _, cnt, _ in res.ops.values()), 0.0)
        ops.append((method, "decode_step", "step", 1, res.total_bytes(), 0.0, flops, None, res.total_time_s()))

    def stack(values):  # one value per op -> (ops x points) flattened
        return np.stack([np.broadcast_to(np.asarray(v, np.float64), shape) for v in values]).reshape(-1)

    n_ops, n = len(ops), int(np.prod(shape))
    method, phase, scope, count, b_read, b_written, flops, ests, time = zip(*ops)
    b_read, b_written, flops = stack(b_read), stack(b_written), stack(flops)
    nan = np.nan
    cols = {
        "source": "predicted", "method": np.repeat(method, n), "phase": np.repeat(phase, n),
        "scope": np.repeat(scope, n), "count": np.repeat(np.asarray(count, np.float64), n), "device": ev.hw.name,
        "model": m.name, "n_heads": m.n_heads, "n_kv_heads": m.n_kv_heads, "d_head": m.d_head, "l": 0,
        "kv_dtype": kv_dtype, "weight_dtype": weight_dtype,
        "bytes_read": b_read, "bytes_written": b_written, "flops": flops,
        "intensity_flop_per_byte": flops / np.maximum(b_read + b_written, 1e-300),
        "memory_time_s": stack([nan if e is None else e.memory_time_s for e in ests]),
        "compute_time_s": stack([nan if e is None else e.compute_time_s for e in ests]),
        "overhead_time_s": stack([nan if e is None else e.overhead_time_s for e in ests]),
        "bound": np.concatenate([np.broadcast_to("memory" if e is None else e.bound, shape).reshape(-1) for e in ests]),
        "time_s": stack(time), "status": "ok",
    }
    for name, v in (("batch", w.batch), ("seq_len", w.seq_len), ("r", r), ("k", k)):
        cols[name] = np.tile(np.broadcast_to(np.asarray(v, np.int64), shape).reshape(-1), n_ops)
    size = n_ops * n
    return {c: cols[c] if isinstance(cols.get(c), np.ndarray) else np.full(size, cols.get(c, nan)) for c in COLUMNS}
