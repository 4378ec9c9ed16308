"""Plain PyTorch definitions of dense decode attention and SparQ (Algorithm 1, SPARQ.md).

Readable rather than fast: these are the definitions the kernels are tested against.
They compute in the dtype of their inputs; pass float64 tensors (`.double()`) for an
oracle. Shapes: q [B, Hq, d]; K, V [B, Hkv, S, d]; v_bar [B, Hkv, d]; Hq = g * Hkv.
"""
from __future__ import annotations

import math

import torch


def _expand_group(x, g):
    """[B, Hkv, ...] -> [B, Hkv*g, ...]: each KV head serves g consecutive query heads."""
    return x.repeat_interleave(g, dim=1)


def dense_reference(q, K, V):
    """softmax(q K^T / sqrt(d)) V per query head; returns [B, Hq, d]."""
    B, Hq, d = q.shape
    g = Hq // K.shape[1]
    Kx, Vx = _expand_group(K, g), _expand_group(V, g)
    s = torch.einsum("bhd,bhsd->bhs", q, Kx) / math.sqrt(d)
    return torch.einsum("bhs,bhsd->bhd", torch.softmax(s, dim=-1), Vx)


def sparq_approx_scores(q, K, r):
    """Steps 1-3 for every query head: (s_hat [B, Hq, S], i1 [B, Hkv, r]).

    GQA: |q| is summed over the group before the top-r, so one i1 serves the group;
    tau stays per query head.
    """
    B, Hq, d = q.shape
    Hkv = K.shape[1]
    g = Hq // Hkv
    qg = q.reshape(B, Hkv, g, d)
    # Ties in |q| (common in bf16) go to the lowest component index, as in the kernel.
    i1 = torch.sort(qg.abs().sum(dim=2), dim=-1, descending=True, stable=True).indices[..., :r]  # [B, Hkv, r]
    q_sel = torch.gather(qg, 3, i1[:, :, None, :].expand(B, Hkv, g, r))  # [B, Hkv, g, r]
    K_sel = torch.gather(K, 3, i1[:, :, None, :].expand(B, Hkv, K.shape[2], r))  # [B, Hkv, S, r]
    tau = torch.sqrt(d * q_sel.abs().sum(-1) / qg.abs().sum(-1))  # [B, Hkv, g]
    logits = torch.einsum("bhgr,bhsr->bhgs", q_sel, K_sel) / tau[..., None]
    s_hat = torch.softmax(logits, dim=-1)
    return s_hat.reshape(B, Hq, -1), i1


def sparq_selection_scores(s_hat, n_kv_heads, l):
    """Step 5's ranking score per KV head: s_hat summed over the group, +inf on the last l."""
    B, Hq, S = s_hat.shape
    score = s_hat.reshape(B, n_kv_heads, Hq // n_kv_heads, S).sum(dim=2)
    if l > 0:
        score[..., S - l:] = math.inf
    return score


def sparq_reference(q, K, V, v_bar, r, k, l=0, mix_mean=True, i2=None):
    """SparQ Algorithm 1 for one decode step; returns (y [B, Hq, d], i2 [B, Hkv, k]).

    i2: positions to attend to, [B, Hkv, k]; None selects them here (step 5). Passing a
    kernel's choice checks the kernel's arithmetic independently of near-ties in top-k.
    """
    B, Hq, d = q.shape
    Hkv = K.shape[1]
    g = Hq // Hkv
    s_hat, _ = sparq_approx_scores(q, K, r)
    if i2 is None:
        i2 = torch.topk(sparq_selection_scores(s_hat, Hkv, l), k, dim=-1).indices
    i2 = i2.long()
    i2q = _expand_group(i2, g)  # [B, Hq, k]
    alpha = torch.gather(s_hat, 2, i2q).sum(-1)  # step 6, per query head
    K_top = torch.gather(K, 2, i2[..., None].expand(B, Hkv, i2.shape[-1], d))
    V_top = torch.gather(V, 2, i2[..., None].expand(B, Hkv, i2.shape[-1], d))
    y = dense_reference(q, K_top, V_top)  # step 7
    if mix_mean:  # step 8
        y = alpha[..., None] * y + (1 - alpha[..., None]) * _expand_group(v_bar.to(y.dtype), g)
    return y, i2
