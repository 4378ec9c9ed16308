"""The decode KV cache: K stored twice (rows and columns), V, and the running mean of V.

Layout per sequence and KV head (SPARQ.md section 2):
  K   [B, H_kv, C, d]  rows of K, read by exact attention over gathered positions
  KT  [B, H_kv, d, C]  columns of K, read r rows at a time by SparQ's approximate scores
  V   [B, H_kv, C, d]
  v_bar [B, H_kv, d]   fp32 running mean of V (bf16 would stop moving after a few
                       thousand steps: an increment of 1/n falls below half an ulp)
C is the capacity; `length` (S) positions are valid and is a plain runtime integer.
KT's rows are KT_ALIGN positions apart at least (its storage is padded to a multiple of it),
so every row starts 16-byte aligned whatever C is: the score kernel then reads K^T with
16-byte loads. With an odd row stride it could only use 2-byte loads (H100, B=1, S=32k:
three times the load traffic and twice the DRAM bytes; experiments/NOTES.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

SUPPORTED_D_HEAD = (64, 80, 128, 256)
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
KT_ALIGN = 64  # positions: 128 bytes of bf16


@dataclass
class KVCache:
    K: torch.Tensor
    KT: torch.Tensor
    V: torch.Tensor
    v_bar: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, batch, n_kv_heads, capacity, d_head, dtype=torch.bfloat16, device="cuda"):
        if d_head not in SUPPORTED_D_HEAD:
            raise ValueError(f"d_head must be one of {SUPPORTED_D_HEAD}, got {d_head}")
        if dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"KV dtype must be bfloat16 or float16, got {dtype}")
        shape = (batch, n_kv_heads, capacity, d_head)
        K = torch.zeros(shape, dtype=dtype, device=device)
        padded = -(-capacity // KT_ALIGN) * KT_ALIGN
        KT = torch.zeros((batch, n_kv_heads, d_head, padded), dtype=dtype, device=device)[..., :capacity]
        V = torch.zeros(shape, dtype=dtype, device=device)
        v_bar = torch.zeros((batch, n_kv_heads, d_head), dtype=torch.float32, device=device)
        return cls(K, KT, V, v_bar, 0)

    @classmethod
    def from_prefill(cls, k, v, capacity=None):
        """A cache holding k, v [B, H_kv, S, d] (a dense prefill), with room up to `capacity`."""
        B, H, S, d = k.shape
        cache = cls.empty(B, H, capacity or S, d, dtype=k.dtype, device=k.device)
        cache.K[:, :, :S] = k
        cache.KT[:, :, :, :S] = k.transpose(2, 3)
        cache.V[:, :, :S] = v
        cache.v_bar.copy_(v.float().mean(dim=2))
        cache.length = S
        return cache

    @property
    def batch(self):
        return self.K.shape[0]

    @property
    def n_kv_heads(self):
        return self.K.shape[1]

    @property
    def capacity(self):
        return self.K.shape[2]

    @property
    def d_head(self):
        return self.K.shape[3]

    @property
    def dtype(self):
        return self.K.dtype

    def keys(self):
        """Valid rows of K, [B, H_kv, S, d] (a view)."""
        return self.K[:, :, : self.length]

    def values(self):
        return self.V[:, :, : self.length]
