"""A decode workload: shapes and SparQ settings, scalars or broadcastable numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class Workload:
    batch: object
    seq_len: object
    n_heads: int
    n_kv_heads: int
    d_head: int
    r: object = 16
    k: object = 128
    l: object = 0
    kv_bytes: float = 2.0  # bytes per KV element
    act_bytes: float = 2.0  # bytes per activation element (q, new k/v, outputs)

    @property
    def group_size(self) -> int:
        return self.n_heads // self.n_kv_heads

    @property
    def kv_heads_total(self):
        """Independent (sequence, KV head) pairs: B * H_kv."""
        return np.asarray(self.batch) * self.n_kv_heads


def settings_for_compression(d_head, seq_len, compression: float):
    """r and k for a target transfer ratio c, as in sparq-gpt-fast: r = d_h*c, k = S*c/2."""
    r = np.maximum(1, np.rint(np.asarray(d_head) * compression)).astype(np.int64)
    k = np.maximum(1, np.floor(np.asarray(seq_len) * compression / 2)).astype(np.int64)
    return r, k


def validate(w: Workload) -> None:
    """UserError for settings no kernel can run (scalar or elementwise)."""
    checks = [
        (np.asarray(w.batch) < 1, f"batch must be at least 1 (got {_show(w.batch)})"),
        (np.asarray(w.seq_len) < 1, f"sequence length must be at least 1 (got {_show(w.seq_len)})"),
        (np.asarray(w.r) < 1, f"r must be at least 1 (got {_show(w.r)})"),
        (np.asarray(w.k) < 1, f"k must be at least 1 (got {_show(w.k)})"),
        (np.asarray(w.l) < 0, f"l must be at least 0 (got {_show(w.l)})"),
        (np.asarray(w.r) > w.d_head, f"r = {_show(w.r)} is larger than d_head = {w.d_head}: r counts query components"),
        (np.asarray(w.k) > np.asarray(w.seq_len), f"k = {_show(w.k)} is larger than the sequence length S = {_show(w.seq_len)}"),
        (np.asarray(w.l) > np.asarray(w.k), f"l = {_show(w.l)} is larger than k = {_show(w.k)}: the local window counts inside k"),
    ]
    for bad, message in checks:
        if np.any(bad):
            raise UserError(message)


def _show(x) -> str:
    a = np.asarray(x)
    return str(a.item()) if a.size == 1 else f"{a.min()}..{a.max()}"
