"""Triton decode kernels: KV cache, append, dense split-KV attention and SparQ.

Importing this package imports torch and triton (the rest of sparq_perf does not).
"""
from .append import append
from .cache import KVCache
from .dense import DenseWorkspace, dense_attention
from .sparq import SparqState, sparq_attend, sparq_decode, sparq_score, sparq_select, topk_indices

__all__ = [
    "KVCache", "append", "dense_attention", "DenseWorkspace", "sparq_decode", "sparq_score",
    "sparq_select", "sparq_attend", "SparqState", "topk_indices",
]
