"""`append`: write the new k (both layouts) and v at position S, update v_bar, S += 1.

Bytes per KV head: writes 3*d*e (k twice, v once), reads k and v (2*d*e), reads and
writes v_bar (2*d*4).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .cache import KVCache


@triton.jit
def _append_kernel(
    K, KT, V, VBAR, KNEW, VNEW, pos, inv_n,
    sKb, sKh, sKs, sTb, sTh, sTd, sVb, sVh, sVs, sMb, sMh, sNb, sNh, sWb, sWh,
    HKV,
    D: tl.constexpr,  # head dimension
    DP: tl.constexpr,  # D rounded up to a power of two (tl.arange needs one)
):
    pid = tl.program_id(0).to(tl.int64)
    b = pid // HKV
    h = pid % HKV
    offs = tl.arange(0, DP)
    m = offs < D
    k = tl.load(KNEW + b * sNb + h * sNh + offs, mask=m)
    v = tl.load(VNEW + b * sWb + h * sWh + offs, mask=m)
    tl.store(K + b * sKb + h * sKh + pos * sKs + offs, k, mask=m)
    tl.store(KT + b * sTb + h * sTh + offs * sTd + pos, k, mask=m)
    tl.store(V + b * sVb + h * sVh + pos * sVs + offs, v, mask=m)
    vb = tl.load(VBAR + b * sMb + h * sMh + offs, mask=m)
    vb = vb + (v.to(tl.float32) - vb) * inv_n
    tl.store(VBAR + b * sMb + h * sMh + offs, vb, mask=m)


def append(cache: KVCache, k_new: torch.Tensor, v_new: torch.Tensor) -> None:
    """Append one position: k_new, v_new [B, H_kv, d] in the cache's dtype."""
    B, H, d = cache.batch, cache.n_kv_heads, cache.d_head
    if k_new.shape != (B, H, d) or v_new.shape != (B, H, d):
        raise ValueError(f"k_new and v_new must be [{B}, {H}, {d}], got {tuple(k_new.shape)}, {tuple(v_new.shape)}")
    if k_new.dtype != cache.dtype or v_new.dtype != cache.dtype:
        raise ValueError(f"k_new, v_new must be {cache.dtype}")
    if k_new.stride(-1) != 1 or v_new.stride(-1) != 1:
        raise ValueError("k_new and v_new need a contiguous last dimension")
    pos = cache.length
    if pos >= cache.capacity:
        raise ValueError(f"cache full: capacity {cache.capacity}")
    write_at(cache, k_new, v_new, pos)
    cache.length = pos + 1


def write_at(cache: KVCache, k_new, v_new, pos: int) -> None:
    """The append kernel at a given position, leaving `length` alone (for timing)."""
    B, H, d = cache.batch, cache.n_kv_heads, cache.d_head
    K, KT, V, vb = cache.K, cache.KT, cache.V, cache.v_bar
    _append_kernel[(B * H,)](
        K, KT, V, vb, k_new, v_new, pos, 1.0 / (pos + 1),
        K.stride(0), K.stride(1), K.stride(2), KT.stride(0), KT.stride(1), KT.stride(2),
        V.stride(0), V.stride(1), V.stride(2), vb.stride(0), vb.stride(1),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
        H, D=d, DP=triton.next_power_of_2(d), num_warps=1,
    )
