"""The prediction grid the report shows, as rows of the shared schema (one DataFrame).

A grid of thousands of points is built column-wise by `predict.row_columns` (which also
makes `predict.rows_from`'s rows of one point) from one vectorized `evaluate` per (model,
device, SparQ setting).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..compare import LABELS, RIVALS, _note, params_text
from ..cost import rivals
from ..hardware import builtin_profiles
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
    """`compare.compare_rows` for every (model, device, batch, S) and every setting that is a target
    compression (a fixed (r, k) has no counterpart for the other methods), dense among them,
    labelled with `setting`, plus `kv_room_bytes` (usable memory less the weights).

    compare_rows evaluates one batch and one compression at a time; here one `evaluate` per
    (model, device) covers them all, with the same settings and the same values (tests check).
    """
    profiles, known = builtin_profiles(), builtin_models()
    devices = list(profiles) if devices is None else list(devices)
    targets = [s for s in settings if s.compression is not None]
    methods = ("dense",) + tuple(m for m in methods if m != "dense")
    S = np.asarray(seq_lens, np.int64)
    B = np.asarray(batches, np.int64)[None, :, None]
    shape = (len(targets), len(batches), len(S))  # (compression, batch, S)
    parts = []
    for model in (known[m] for m in models):
        own = {m: [rivals.params_for_compression(m, model.d_head, S, s.compression, dtype_bytes(kv_dtype))
                   for s in targets] for m in methods}
        own = {m: {c: np.stack([np.broadcast_to(p[c], S.shape) for p in ps])[:, None, :] for c in ps[0]}
               for m, ps in own.items()}
        text = {m: {"params": [params_text(m, r, k) for r, k in zip(flat(p["r"], shape), flat(p["k"], shape))],
                    "note": [_note(m, bool(reach)) for reach in flat(p["reachable"], shape)]}
                for m, p in own.items()}
        for dev in devices:
            ev = evaluate(model, profiles[dev], batch=B, seq_len=S, r=own["dense"]["r"], k=own["dense"]["k"],
                          weight_dtype=weight_dtype, kv_dtype=kv_dtype, methods=methods,
                          params={m: {"r": p["r"], "k": p["k"]} for m, p in own.items()})
            sm = ev.summary
            for m in methods:
                parts.append({
                    "model": model.name, "device": dev, "batch": flat(B, shape, np.int64),
                    "setting": flat(np.array([s.label for s in targets])[:, None, None], shape, object),
                    "seq_len": flat(S, shape, np.int64), "method": m, "label": LABELS.get(m, m), **text[m],
                    "speedup_step": flat(sm.get(f"{m}.speedup_step", 1.0), shape),
                    "speedup_attention": flat(sm.get(f"{m}.speedup_attention", 1.0), shape),
                    "kv_bytes_per_sequence": flat(sm[f"{m}.kv_bytes"] / B, shape),
                    "max_batch": flat(sm[f"{m}.max_batch"], shape, np.int64),
                    "fits": flat(sm[f"{m}.fits"], shape, bool), "reachable": flat(own[m]["reachable"], shape, bool),
                    "evicts": m in rivals.EVICTION_METHODS, "kv_room_bytes": sm["usable_bytes"] - sm["weights_bytes"],
                })
    n = int(np.prod(shape))
    return pd.DataFrame({c: np.concatenate([p[c] if isinstance(p[c], (np.ndarray, list)) else np.full(n, p[c])
                                            for p in parts]) for c in parts[0]})


def flat(values, shape, dtype=np.float64) -> np.ndarray:
    """values broadcast to shape, flattened."""
    return np.broadcast_to(np.asarray(values, dtype), shape).reshape(-1)
