"""SparQ's rivals in the same cost vocabulary: bytes, FLOPs and launches per phase of one
decode step, per layer and whole batch, numpy-broadcastable like `attention.py`.

Every method runs the same three kinds of step, named in `phases`: score (cheap estimate
of which positions matter), select (top-k), attend (exact attention over what was chosen).
Per (sequence, KV head) pair n = B * H_kv, with g query heads sharing it, e bytes per KV
element and a bytes per activation element:

- Quest (Tang et al., ICML 2024): K cut into pages of P positions, each page keeping the
  element-wise min and max of its keys (2*d_h elements). Score: an upper bound of q.k per
  page from min/max, reading 2*d_h*S/P elements (2/P of K). Select: top pages (the token
  budget k is k/P pages). Attend: exact attention over the chosen pages' K and V rows.
  The first `dense_layers` layers (2 in the paper) run dense attention: `phase_counts`.
- Double Sparsity (Yang et al., 2024): r channels per KV head, chosen offline, copied into a
  label cache (S-major rows of r elements, 16- or 4-bit). Score: q's r channels against
  the r*S label elements. Select top-k, gather k rows of K and V.
- Loki (Singhania et al., NeurIPS 2024): keys stored once, rotated into a per-head PCA
  basis. Score: rotate q (a d_h x d_h basis read per KV head, shared by the batch), dot it
  with the first r rotated dims, which are the first r*e bytes of each S-major row of K.
  A read of r*e contiguous bytes out of every d_h*e costs whole sectors: ceil(r*e/sector)
  sectors per row. With 32-byte sectors, bf16 and r = 16 or 32 that is exactly r*e (no
  waste); r = 8 costs twice its bytes; where the memory system fetches 64 bytes at a time
  set sector_bytes=64. The read is also strided (one short run per row), which streams
  less well than SparQ's contiguous K^T rows even at equal bytes; that efficiency is a
  calibration matter, not a byte count. No second copy of K.
- H2O (Zhang et al., 2023) and StreamingLLM / LM-Infinite (Xiao et al., 2023; Han et
  al., 2023): eviction. The cache holds only k positions (H2O: heavy hitters by
  accumulated attention score plus recent ones; StreamingLLM: a few sink tokens plus a
  recent window), so reads and memory shrink with k, and evicted tokens cannot be
  recovered. H2O also keeps an accumulated score per kept position (group-summed, one row
  per KV head), read and updated at each step, and picks the victim by argmin.
- FlexGen's top-k sparse attention (as tabulated in the SparQ paper): exact scores over
  all of K, then only k rows of V.

Each function returns `PhaseCost`s whose byte terms are named after the algorithm step;
`params_for_compression` gives each method's settings for a target transfer ratio.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import phases as P
from ..workload import Workload
from .attention import (INDEX_BYTES, SOFTMAX_FLOPS_PER_SCORE, STAT_BYTES, append_cost, dense_attention_cost,
                        score_writes, select_cost)
from .base import PhaseCost


@dataclass(frozen=True)
class SelectImpl:
    """Switches shared by score-select-attend methods (as in `SparqImpl`).

    scores_in_memory: the scoring kernel writes fp32 scores, the selection kernel reads them.
    select_passes: passes of the selection kernel over the score array.
    select_filter: the selection adds our kernels' sample and candidate traffic (one launch
        and none of it when False).
    sector_bytes: smallest memory transaction (32 B on NVIDIA GPUs).
    """

    scores_in_memory: bool = True
    select_passes: float = 1.0
    select_filter: bool = True  # our selection's sample and candidates (as SparqImpl)
    sample_in_score: bool = True  # as SparqImpl: the scoring kernel writes the selection's sample
    sector_bytes: int = 32
    score_launches: int = 1
    select_launches: int = 3
    attend_launches: int = 2  # split-k attention + log-sum-exp merge


@dataclass(frozen=True)
class QuestImpl(SelectImpl):
    page_size: int = 16  # P: positions per page (the paper's default)
    dense_layers: int = 2  # the first layers run dense attention, as in the paper


@dataclass(frozen=True)
class DoubleSparsityImpl(SelectImpl):
    label_bits: int = 16  # 16 or 4 bits per label-cache element


@dataclass(frozen=True)
class LokiImpl(SelectImpl):
    pass


@dataclass(frozen=True)
class FlexGenImpl(SelectImpl):
    pass


@dataclass(frozen=True)
class H2OImpl:
    """score_bytes: bytes per accumulated score (fp32).
    bookkeeping: 'cache' keeps a score per kept position (a real eviction cache);
        'sequence' keeps one per position seen, as the SparQ paper's 2*S term counts.
    """

    score_bytes: float = STAT_BYTES
    bookkeeping: str = "cache"
    attend_launches: int = 2
    evict_launches: int = 1


@dataclass(frozen=True)
class StreamingImpl:
    sinks: int = 4  # initial positions always kept (StreamingLLM's default); the rest of k is the window
    attend_launches: int = 2


DEFAULT_IMPLS = {
    "quest": QuestImpl(), "double-sparsity": DoubleSparsityImpl(), "loki": LokiImpl(), "h2o": H2OImpl(),
    "streaming-llm": StreamingImpl(), "flexgen": FlexGenImpl(),
}
PHASES = {
    "quest": P.QUEST_PHASES, "double-sparsity": P.DS_PHASES, "loki": P.LOKI_PHASES, "h2o": P.H2O_PHASES,
    "streaming-llm": P.STREAM_PHASES, "flexgen": P.FLEXGEN_PHASES,
}
EVICTION_METHODS = ("h2o", "streaming-llm")
EVICTION_NOTE = "evicted tokens cannot be recovered: later queries never see them"


def _f(x):
    return np.asarray(x, np.float64)


def _dims(w: Workload):
    """n = B*H_kv pairs, d_h, e, a, g."""
    return _f(w.batch) * w.n_kv_heads, w.d_head, w.kv_bytes, w.act_bytes, w.group_size


def sectors(nbytes, sector_bytes):
    """Bytes moved by a contiguous aligned run of `nbytes`: whole sectors."""
    return np.ceil(_f(nbytes) / sector_bytes) * sector_bytes


def label_bytes(impl: DoubleSparsityImpl) -> float:
    if impl.label_bits not in (4, 16):
        raise ValueError(f"Double Sparsity label cache is 16- or 4-bit, not {impl.label_bits}")
    return impl.label_bits / 8.0


# ----------------------------------------------------------------------------------------
# Building blocks shared by the methods

def _score(name, w: Workload, impl: SelectImpl, positions, key_reads: dict, flops_per_position_per_head,
           extra_flops=0.0, extra_writes=None) -> PhaseCost:
    """q (g heads) against `positions` cheap keys; group-summed fp32 scores, one row per KV head."""
    n, d, e, a, g = _dims(w)
    reads = {"q": n * g * d * a, **key_reads}
    writes = {**(extra_writes or {}), **score_writes(n, positions, impl)}
    flops = n * g * positions * flops_per_position_per_head + n * positions * g + extra_flops
    return PhaseCost(name, reads, writes, flops, impl.score_launches)


def _select(name, w: Workload, impl: SelectImpl, positions, chosen) -> PhaseCost:
    """Top-`chosen` of `positions` scores; writes int32 indices (our selection: select_cost)."""
    return select_cost(name, _dims(w)[0], positions, chosen, impl)


def _attend(name, w: Workload, rows, launches, *, indices=None, k_rows=True, extra_reads=None,
            extra_writes=None) -> PhaseCost:
    """Exact attention over `rows` positions: K and V rows (gathered by `indices` int32 if given)."""
    n, d, e, a, g = _dims(w)
    reads = {}
    if indices is not None:
        reads["indices"] = n * indices * INDEX_BYTES
    if k_rows:
        reads["K_rows"] = n * rows * d * e
    reads["V_rows"] = n * rows * d * e
    reads["q"] = n * g * d * a
    reads.update(extra_reads or {})
    writes = {"out": n * g * d * a, **(extra_writes or {})}
    flops = n * g * rows * (4.0 * d + SOFTMAX_FLOPS_PER_SCORE)
    return PhaseCost(name, reads, writes, flops, launches)


def _append(w: Workload, extra_reads=None, extra_writes=None, flops=0.0) -> PhaseCost:
    """The plain append (new k and v rows) plus a method's own terms."""
    base = append_cost(w, "dense")
    return PhaseCost(P.APPEND, {**base.reads, **(extra_reads or {})}, {**base.writes, **(extra_writes or {})},
                     base.flops + flops)


# ----------------------------------------------------------------------------------------
# Per method: phase name -> cost for one layer of the method (append included)

def quest_costs(w: Workload, impl: QuestImpl = QuestImpl()) -> dict[str, PhaseCost]:
    n, d, e, a, g = _dims(w)
    S, Pg = _f(w.seq_len), impl.page_size
    pages = np.ceil(S / Pg)
    chosen = np.minimum(np.ceil(_f(w.k) / Pg), pages)
    rows = np.minimum(chosen * Pg, S)
    # upper bound per page and head: q*min, q*max, max, sum over d_h
    score = _score(P.QUEST_SCORE, w, impl, pages, {"page_minmax": n * pages * 2 * d * e, "new_k": n * d * a},
                   4.0 * d, extra_flops=n * 2 * d, extra_writes={"page_minmax": n * 2 * d * e})
    return {
        P.APPEND: _append(w),
        P.DENSE_ATTENTION: dense_attention_cost(w),  # run by the dense first layers only: `phase_counts`
        P.QUEST_SCORE: score,
        P.QUEST_SELECT: _select(P.QUEST_SELECT, w, impl, pages, chosen),
        P.QUEST_ATTEND: _attend(P.QUEST_ATTEND, w, rows, impl.attend_launches, indices=chosen),
    }


def double_sparsity_costs(w: Workload, impl: DoubleSparsityImpl = DoubleSparsityImpl()) -> dict[str, PhaseCost]:
    n, d, e, a, g = _dims(w)
    S, r, k, el = _f(w.seq_len), _f(w.r), _f(w.k), label_bytes(impl)
    label_row = sectors(r * el, impl.sector_bytes)  # one short row per new position
    return {
        P.APPEND: _append(w, extra_writes={"label_row": n * label_row}),
        P.DS_SCORE: _score(P.DS_SCORE, w, impl, S, {"label_rows": n * S * r * el}, 2.0 * r),
        P.DS_SELECT: _select(P.DS_SELECT, w, impl, S, k),
        P.DS_ATTEND: _attend(P.DS_ATTEND, w, k, impl.attend_launches, indices=k),
    }


def loki_costs(w: Workload, impl: LokiImpl = LokiImpl()) -> dict[str, PhaseCost]:
    n, d, e, a, g = _dims(w)
    S, r, k = _f(w.seq_len), _f(w.r), _f(w.k)
    basis = w.n_kv_heads * d * d * e + 0.0 * n  # one PCA basis per KV head of the layer, shared by the batch
    k_first_dims = n * S * np.minimum(sectors(r * e, impl.sector_bytes), d * e)
    score = _score(P.LOKI_SCORE, w, impl, S, {"pca_basis": basis, "K_first_r_dims": k_first_dims}, 2.0 * r,
                   extra_flops=n * g * 2.0 * d * d)
    return {
        P.APPEND: _append(w, extra_reads={"pca_basis": basis}, flops=n * 2.0 * d * d),  # rotate the new key
        P.LOKI_SCORE: score,
        P.LOKI_SELECT: _select(P.LOKI_SELECT, w, impl, S, k),
        P.LOKI_ATTEND: _attend(P.LOKI_ATTEND, w, k, impl.attend_launches, indices=k),
    }


def h2o_costs(w: Workload, impl: H2OImpl = H2OImpl()) -> dict[str, PhaseCost]:
    if impl.bookkeeping not in ("cache", "sequence"):
        raise ValueError(f"H2O bookkeeping is 'cache' or 'sequence', not {impl.bookkeeping!r}")
    n, d, e, a, g = _dims(w)
    S, kept = _f(w.seq_len), np.minimum(_f(w.k), _f(w.seq_len))
    tracked = kept if impl.bookkeeping == "cache" else S
    sb = impl.score_bytes
    attend = _attend(P.H2O_ATTEND, w, kept, impl.attend_launches, extra_reads={"acc_scores": n * tracked * sb},
                     extra_writes={"acc_scores": n * tracked * sb})
    attend = PhaseCost(attend.name, attend.reads, attend.writes, attend.flops + n * g * kept, attend.launches)
    evict = PhaseCost(P.H2O_EVICT, {"acc_scores": n * kept * sb}, {"slot": n * INDEX_BYTES, "new_score": n * sb},
                      n * kept, impl.evict_launches)
    return {P.APPEND: _append(w), P.H2O_ATTEND: attend, P.H2O_EVICT: evict}


def streaming_costs(w: Workload, impl: StreamingImpl = StreamingImpl()) -> dict[str, PhaseCost]:
    """Sinks + a ring-buffer window: the slot to overwrite is arithmetic, no selection pass."""
    kept = np.minimum(_f(w.k), _f(w.seq_len))
    return {P.APPEND: _append(w), P.STREAM_ATTEND: _attend(P.STREAM_ATTEND, w, kept, impl.attend_launches)}


def flexgen_costs(w: Workload, impl: FlexGenImpl = FlexGenImpl()) -> dict[str, PhaseCost]:
    n, d, e, a, g = _dims(w)
    S, k = _f(w.seq_len), _f(w.k)
    return {
        P.APPEND: _append(w),
        P.FLEXGEN_SCORE: _score(P.FLEXGEN_SCORE, w, impl, S, {"K": n * S * d * e}, 2.0 * d + SOFTMAX_FLOPS_PER_SCORE),
        P.FLEXGEN_SELECT: _select(P.FLEXGEN_SELECT, w, impl, S, k),
        P.FLEXGEN_ATTEND: _attend(P.FLEXGEN_ATTEND, w, k, impl.attend_launches, indices=k, k_rows=False,
                                  extra_reads={"chosen_scores": n * k * STAT_BYTES}),
    }


COSTS = {
    "quest": quest_costs, "double-sparsity": double_sparsity_costs, "loki": loki_costs, "h2o": h2o_costs,
    "streaming-llm": streaming_costs, "flexgen": flexgen_costs,
}


def rival_costs(method: str, w: Workload, impl=None) -> dict[str, PhaseCost]:
    return COSTS[method](w, impl or DEFAULT_IMPLS[method])


def phase_counts(method: str, n_layers: int, impl=None) -> dict[str, int]:
    """How many layers run each phase that is not run by every layer (Quest's dense first layers)."""
    if method != "quest":
        return {}
    dense = min((impl or DEFAULT_IMPLS["quest"]).dense_layers, n_layers)
    return {P.DENSE_ATTENTION: dense, **{p: n_layers - dense for p in P.QUEST_PHASES}}


# ----------------------------------------------------------------------------------------
# Settings for a target transfer ratio, and leading-order element counts

def params_for_compression(method: str, d_head: int, seq_len, compression: float, kv_bytes: float = 2.0,
                           impl=None) -> dict:
    """Each method's settings whose KV transfers are about `compression` of dense's at long S.

    Leading terms per head, as fractions of dense's 2*S*d_h elements:
    - SparQ (both layouts), Loki: r/(2 d_h) + k/S, split evenly as in sparq-gpt-fast:
      r = d_h*c, k = S*c/2;
    - Double Sparsity: r*e_label/(2 d_h e) + k/S, split evenly: r = d_h*c*e/e_label, k = S*c/2;
    - Quest: 1/P (metadata) + k/S: k = S*(c - 1/P) in whole pages; unreachable for c <= 1/P
      (one page is kept); its dense first layers are not in the target;
    - H2O: (k/S)(1 + score_bytes/(d_h e)) (scores read and written per kept position);
    - StreamingLLM: k/S;
    - FlexGen: 1/2 + k/(2S): unreachable for c <= 1/2.
    Returns r, k (numpy, broadcast over seq_len) and `reachable`.
    """
    S, c, d = _f(seq_len), float(compression), d_head
    impl = impl or DEFAULT_IMPLS.get(method)
    reachable = np.ones_like(S, dtype=bool)
    r = np.maximum(1, np.rint(d * c))
    k = np.floor(S * c / 2)
    if method == "dense":
        r, k = _f(d) + 0 * S, S
    elif method == "double-sparsity":
        r = np.clip(np.rint(d * c * kv_bytes / label_bytes(impl)), 1, d)
    elif method == "quest":
        Pg = impl.page_size
        reachable = c > 1.0 / Pg + 0 * S
        k = np.maximum(1, np.floor(S * (c - 1.0 / Pg) / Pg)) * Pg
    elif method == "h2o":
        k = np.floor(S * c / (1.0 + impl.score_bytes / (d * kv_bytes)))
    elif method == "streaming-llm":
        k = np.floor(S * c)
    elif method == "flexgen":
        reachable = c > 0.5 + 0 * S
        k = np.floor(S * np.maximum(2 * c - 1, 0))
    k = np.clip(k, 1, S).astype(np.int64)
    return {"r": np.asarray(r).astype(np.int64), "k": k, "reachable": np.asarray(reachable)}


def element_ratio(method: str, S, d_h, r, k, kv_bytes: float = 2.0, impl=None):
    """The leading-order element count of each method's KV transfers over dense's 2*S*d_h + 2*d_h
    (the SparQ paper's Table 1 style: KV reads, the new k and v written, nothing else)."""
    S, r, k = _f(S), _f(r), _f(k)
    impl = impl or DEFAULT_IMPLS.get(method)
    dense = 2 * S * d_h + 2 * d_h
    kv = {
        "dense": dense,
        "sparq": S * r + 2 * k * d_h + 4 * d_h,
        "sparq-1xk": S * r + 2 * k * d_h + 4 * d_h,
        "loki": S * r + 2 * k * d_h + 2 * d_h,
        "flexgen": S * d_h + k * d_h + 2 * d_h,
        "streaming-llm": 2 * np.minimum(k, S) * d_h + 2 * d_h,
    }
    if method == "double-sparsity":
        return (S * r * label_bytes(impl) / kv_bytes + 2 * k * d_h + 2 * d_h) / dense
    if method == "quest":
        Pg = impl.page_size
        pages = np.ceil(S / Pg)
        return (2 * d_h * pages + 2 * np.minimum(np.ceil(k / Pg) * Pg, S) * d_h + 2 * d_h) / dense
    if method == "h2o":
        kept = np.minimum(k, S)
        tracked = kept if impl.bookkeeping == "cache" else S
        return (2 * kept * d_h + 2 * d_h + 2 * tracked * impl.score_bytes / kv_bytes) / dense
    return kv[method] / dense
