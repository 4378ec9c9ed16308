"""Zero-argument callables, one per phase and one per whole step, for timing.

Buffers are allocated once here, so each callable can run alone, repeatedly, and inside
a CUDA graph. Phase names come from sparq_perf.phases.
"""
from __future__ import annotations

import torch

from sparq_perf import phases as P

from .append import write_at
from .cache import KVCache
from .dense import DenseWorkspace, dense_attention
from .sparq import SparqState, sparq_attend, sparq_score, sparq_select


LINE_BYTES = 128  # an L2 line: positions this many bytes apart write other lines of K^T


def line_positions(element_bytes: int) -> int:
    """Positions one line of K^T apart."""
    return max(1, LINE_BYTES // element_bytes)


def append_positions(cache: KVCache, n: int) -> list[int]:
    """n positions past the cache's length, a line of K^T apart (the first is the length)."""
    step = line_positions(cache.K.element_size())
    return [cache.length + j * step for j in range(n)]


def append_runners(cache: KVCache, n: int) -> list:
    """Callables writing one new position each, at append_positions(cache, n) (all below the
    capacity), leaving `length` alone, so the other runners keep seeing the same S. Rotated
    among, they write other lines of K^T at each call, as decode steps do (each step's K^T
    column lands in lines the rest of the step has evicted from L2); one position rewritten
    again and again finds its lines in L2 (up to about half as long, H200:
    reports/kernels/append_heads_80ceb58.json)."""
    positions = append_positions(cache, n)
    if positions[-1] >= cache.capacity:
        raise ValueError(f"the append runners need capacity > {positions[-1]}, have {cache.capacity}")
    B, H, d = cache.batch, cache.n_kv_heads, cache.d_head
    k_new = torch.randn(B, H, d, dtype=cache.dtype, device=cache.K.device)
    v_new = torch.randn(B, H, d, dtype=cache.dtype, device=cache.K.device)
    return [(lambda p=p: write_at(cache, k_new, v_new, p)) for p in positions]


def _select_not_alone():
    raise RuntimeError("with the filter in the score kernel (SCORE_FILTER) the select phase runs only after the "
                       "score: time score and select together")


class Runners(dict):
    """dict phase name -> callable; `.state` holds the method's buffers (for checking outputs)."""

    state = None


def phase_runners(method: str, q: torch.Tensor, cache: KVCache, r=16, k=1024, l=0, mix_mean=True,
                  with_append=True) -> dict:
    """dict phase name -> callable for 'dense' or 'sparq' on this q and cache (S = cache.length).

    The append runner writes position S (which must be below the capacity), as the first of
    append_runners.
    """
    runners = Runners()
    if with_append:
        runners[P.APPEND] = append_runners(cache, 1)[0]
    if method == "dense":
        ws = DenseWorkspace(q, cache)
        runners[P.DENSE_ATTENTION] = lambda: dense_attention(q, cache, ws)
        runners[P.DENSE_DECODE] = runners[P.DENSE_ATTENTION]
        runners.state = ws
    elif method == "sparq":
        st = SparqState(q, cache, r, k, l)

        def decode():
            sparq_score(q, cache, st)
            sparq_select(st)
            return sparq_attend(q, cache, st, mix_mean=mix_mean)

        runners[P.SPARQ_SCORE] = lambda: sparq_score(q, cache, st)
        # under the score filter the pick alone would find the counters it reset (every row
        # searched whole), and the score alone the counters it never reset (its stores masked)
        runners[P.SPARQ_SELECT] = _select_not_alone if st.score_filter else (lambda: sparq_select(st))
        runners[P.SPARQ_ATTEND] = lambda: sparq_attend(q, cache, st, mix_mean=mix_mean)
        runners[P.SPARQ_DECODE] = decode
        runners.state = st
    else:
        raise ValueError(f"method must be 'dense' or 'sparq', got {method!r}")
    return runners
