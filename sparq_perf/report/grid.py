"""The prediction grid the report shows, as rows of the shared schema (one DataFrame).

A grid of thousands of points is built column-wise by `predict.row_columns` (which also
makes `predict.rows_from`'s rows of one point) from one vectorized `evaluate` per (model,
device, SparQ setting); the rivals come from `compare.compare_columns`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..compare import RIVALS, compare_columns
from ..hardware import builtin_profiles
from ..memory import weight_bytes
from ..models import builtin_models
from ..predict import evaluate, row_columns
from ..rows import COLUMNS
from ..units import dtype_bytes
from ..workload import settings_for_compression

DEFAULT_MODELS = ("llama2-7b", "llama3-8b", "mistral-7b", "llama2-70b")
DEFAULT_BATCHES = (1, 8, 64)
DEFAULT_SEQ_LENS = tuple(2**i for i in range(10, 18))  # 1k .. 128k positions
RIVAL_METHODS = RIVALS + ("flexgen",)  # SparQ, its rivals, and FlexGen's top-k


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
                parts.append(row_columns(ev, r=r, k=k, l=0, weight_dtype=weight_dtype, kv_dtype=kv_dtype))
    size = sum(len(p["source"]) for p in parts)
    df = pd.DataFrame({c: np.concatenate([p[c] for p in parts]) if c in parts[0] else np.full(size, np.nan)
                       for c in COLUMNS})
    key = ["source", "method", "phase", "device", "model", "batch", "seq_len", "r", "k", "l"]
    return df.drop_duplicates(key, ignore_index=True)


def rival_rows(models=DEFAULT_MODELS, devices=None, batches=DEFAULT_BATCHES, seq_lens=DEFAULT_SEQ_LENS,
               settings=SETTINGS, methods=RIVAL_METHODS, weight_dtype="bf16", kv_dtype="bf16") -> pd.DataFrame:
    """`compare.compare_columns` for every (model, device) over the batches, the sequence lengths
    and every setting that is a target compression (a fixed (r, k) has no counterpart for the
    other methods), dense among them, labelled with `setting`, plus `kv_room_bytes` (usable
    memory less the weights)."""
    profiles, known = builtin_profiles(), builtin_models()
    devices = list(profiles) if devices is None else list(devices)
    targets = [s for s in settings if s.compression is not None]
    keep = ("model", "device", "batch", "setting", "seq_len", "method", "label", "params", "note", "speedup_step",
            "speedup_attention", "kv_bytes_per_sequence", "max_batch", "fits", "reachable", "evicts")
    labels = np.array([s.label for s in targets], object)[:, None]
    parts = []
    for model in (known[m] for m in models):
        cols = compare_columns(model, [profiles[d] for d in devices], seq_len=seq_lens, batch=batches,
                               compression=[s.compression for s in targets], methods=methods,
                               weight_dtype=weight_dtype, kv_dtype=kv_dtype)
        n, weights = len(cols["method"]), weight_bytes(model, dtype_bytes(weight_dtype))
        cols["setting"] = np.resize(np.broadcast_to(labels, (len(targets), len(batches) * len(seq_lens))), n)
        room = np.repeat([profiles[d].usable_bytes - weights for d in devices], n // len(devices))  # device by device
        parts.append({**{c: cols[c] for c in keep}, "kv_room_bytes": room})
    return pd.DataFrame({c: np.concatenate([p[c] for p in parts]) for c in parts[0]})
