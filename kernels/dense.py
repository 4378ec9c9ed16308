"""`dense_attention`: split-KV decode attention (flash-decoding) with a log-sum-exp merge.

Grid (B*H_kv, splits): each program owns one KV head and one chunk of S, and serves all g
query heads of the group at once, so K and V are read exactly once.
Bytes: reads K and V (2*S*d*e per KV head) and q; writes per split and query head a
partial (d+2)*4 bytes, read back by the merge, which writes the output (d*e).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (INTERPRET, LOG2E, dot, check_q, chunk_for, grid_wait, launch_merge, launch_next, n_splits_for,
                      pdl_args)
from .cache import KVCache
from sparq_perf.cost.attention import DenseImpl

BLOCK_N = 128  # positions per tile; with 4 warps and 4 stages the best of the H100 sweep (reports/kernels/dense_sweep.json)
# the grid: splits of S for at most DENSE_WAVES whole waves of programs over the SMs
# (cost.base.splits with whole; one program of 128 positions and 4 stages is resident per SM), so no
# part-filled wave follows the full ones. H200 (reports/kernels/tune_fixed_*.json), speed
# over SDPA, about 2 waves (the rule before, DENSE_WHOLE_WAVES False) -> one whole wave:
# B=1 S=8k 0.934 -> 1.010, 32k 0.926 -> 0.994, 128k 1.070 -> 1.134, GQA B=1 S=32k 0.920
# -> 1.019; from 264 rows (2 x 132 SMs) one split either way (0.98-0.99)
DENSE_WAVES = DenseImpl.waves
DENSE_WHOLE_WAVES = DenseImpl.whole_waves


@triton.jit
def _dense_partial_kernel(
    Q, K, V, O_PART, M_PART, L_PART,
    S, chunk, n_splits, qk_scale,
    sQb, sQh, sKb, sKh, sKs, sVb, sVh, sVs,
    HKV,
    G: tl.constexpr,  # query heads per KV head
    GP: tl.constexpr,  # G padded to 16 (tl.dot needs every dimension >= 16)
    D: tl.constexpr, DP: tl.constexpr,
    BLOCK_N: tl.constexpr,
    UPCAST: tl.constexpr,  # dots on fp32 operands (interpreter only)
    PDL: tl.constexpr,
):
    grid_wait(PDL)
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = pid // HKV
    h = pid % HKV
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, DP)
    offs_n = tl.arange(0, BLOCK_N)
    gm = offs_g < G
    dm = offs_d < D
    q = tl.load(Q + b * sQb + (h * G + offs_g)[:, None] * sQh + offs_d[None, :], mask=gm[:, None] & dm[None, :], other=0.0)
    k_base = K + b * sKb + h * sKh
    v_base = V + b * sVb + h * sVh
    start = split * chunk
    end = tl.minimum(start + chunk, S)
    m_i = tl.full([GP], -float("inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, DP], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + offs_n
        nm = pos < end
        kv_mask = nm[:, None] & dm[None, :]
        k = tl.load(k_base + pos[:, None].to(tl.int64) * sKs + offs_d[None, :], mask=kv_mask, other=0.0)
        s = dot(q, tl.trans(k), UPCAST) * qk_scale  # [GP, BLOCK_N], log2 domain
        s = tl.where(nm[None, :], s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        corr = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * corr + tl.sum(p, 1)
        v = tl.load(v_base + pos[:, None].to(tl.int64) * sVs + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * corr[:, None] + dot(p.to(v.dtype), v, UPCAST)
        m_i = m_new
    launch_next(PDL)
    row = (b * HKV * G + h * G + offs_g) * n_splits + split  # [B, Hq, splits] flattened
    tl.store(M_PART + row, m_i, mask=gm)
    tl.store(L_PART + row, l_i, mask=gm)
    tl.store(O_PART + row[:, None] * D + offs_d[None, :], acc, mask=gm[:, None] & dm[None, :])


class DenseWorkspace:
    """Preallocated partials for one (q shape, cache, S): reusable and CUDA-graph safe."""

    def __init__(self, q, cache: KVCache, block_n=None):
        # d = 256: 128-row tiles of K and V in 4 stages pass the 228 KB of shared memory
        block_n = block_n or (BLOCK_N if cache.d_head <= 128 else 32)
        B, Hq, d = q.shape
        S = cache.length
        self.S = S
        self.block_n = block_n
        self.n_splits = n_splits_for(B * cache.n_kv_heads, S, block_n, DENSE_WAVES, DENSE_WHOLE_WAVES)
        self.chunk = chunk_for(S, self.n_splits, block_n)
        dev = q.device
        self.o_part = torch.empty((B, Hq, self.n_splits, d), dtype=torch.float32, device=dev)
        self.m_part = torch.empty((B, Hq, self.n_splits), dtype=torch.float32, device=dev)
        self.l_part = torch.empty((B, Hq, self.n_splits), dtype=torch.float32, device=dev)
        self.out = torch.empty_like(q)


def dense_attention(q: torch.Tensor, cache: KVCache, workspace: DenseWorkspace | None = None, num_warps=4, num_stages=None):
    """Exact attention of q [B, Hq, d] over the cache's S positions -> [B, Hq, d]."""
    check_q(q, cache)
    num_stages = num_stages or (4 if cache.d_head <= 128 else 2)
    ws = workspace if workspace is not None and workspace.S == cache.length else DenseWorkspace(q, cache)
    B, Hq, d = q.shape
    Hkv = cache.n_kv_heads
    G = Hq // Hkv
    K, V = cache.K, cache.V
    _dense_partial_kernel[(B * Hkv, ws.n_splits)](
        q, K, V, ws.o_part, ws.m_part, ws.l_part,
        cache.length, ws.chunk, ws.n_splits, LOG2E / math.sqrt(d),
        q.stride(0), q.stride(1), K.stride(0), K.stride(1), K.stride(2), V.stride(0), V.stride(1), V.stride(2),
        Hkv, G=G, GP=max(16, triton.next_power_of_2(G)), D=d, DP=triton.next_power_of_2(d),
        BLOCK_N=ws.block_n, UPCAST=INTERPRET, num_warps=num_warps, num_stages=num_stages, **pdl_args(),
    )
    launch_merge(ws.o_part, ws.m_part, ws.l_part, None, cache.v_bar, ws.out, ws.n_splits, mix=False)
    return ws.out
