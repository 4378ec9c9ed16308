"""Attention phases of one decode step: bytes, FLOPs and launches of each, per layer.

Byte terms follow the table "Bytes per phase" of the kernel notes: for each
(sequence, KV head) pair with g query heads sharing it, e bytes per KV element and a bytes
per activation element. Totals are multiplied by B * H_kv. Everything is pure arithmetic
on numpy-broadcastable values: no kernels, no devices.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .. import phases as P
from .. import select_plan as plan
from ..workload import Workload
from .base import PhaseCost, SplitGrid

INDEX_BYTES = 4  # int32 indices
STAT_BYTES = 4  # fp32 scores, softmax statistics and the running mean v_bar
SOFTMAX_FLOPS_PER_SCORE = 5  # max, subtract, exp, sum, scale


@dataclass(frozen=True)
class SparqImpl:
    """How a SparQ implementation moves its bytes (switches the kernels can differ by).

    scores_in_memory: the scoring kernel writes fp32 group-summed scores and the selection
        kernel reads them back (False when selection is fused into scoring).
    select_passes: passes of the selection kernel over the score array in memory.
    k_transposed: K is stored twice (K and K^T, the paper's layout); False stores K once
        and the scoring pass reads r strided columns, each element costing a whole sector.
    sector_bytes: smallest memory transaction (32 B on NVIDIA GPUs).
    score_launches, select_launches, attend_launches: kernels per phase.
    """

    scores_in_memory: bool = True
    select_passes: float = 1.0  # passes over the scores (with select_filter: the filter's one)
    # our selection (select_plan): a threshold from an evenly spread sample of each row (see
    # sample_in_score), a filter pass writing the keys at or above it and their positions
    # (the candidates, each key and position in 8 B), a pick reading them once as it writes
    # the k indices; three launches. False: an ideal one-pass selection.
    select_filter: bool = True
    # the scoring kernel also writes each row's sample contiguously (4 B per sampled key), so
    # the threshold reads it there instead of a sector per key from the scores
    sample_in_score: bool = True
    gqa_score_passes: int = 2  # g > 1: per-head softmax statistics first, then the group sum
    k_transposed: bool = True
    sector_bytes: int = 32
    score_launches: int = 1
    select_launches: int = 3
    attend_launches: int = 2  # split-k attention + log-sum-exp merge
    # up to this many query heads per KV head, the attend's last split program of each head
    # merges the partials itself: one launch fewer (the kernels' FUSED_MERGE_MAX_G)
    merge_in_attend_max_g: int = 1
    # the attend's grid (the kernels' BLOCK_K, ATTEND_WAVES, ATTEND_WAVES_FEW): splits of k in
    # blocks of attend_block_k gathered rows, about attend_waves waves over the compute units,
    # attend_waves_few where a group has several heads or the rows are fewer than the units
    attend_block_k: int = 64
    attend_waves: float = 4.0
    attend_waves_few: float = 2.0
    # ... and there at most this many blocks a program (more splits where k is long; inf:
    # no cap, the kernels' ATTEND_MAX_BLOCKS_FEW, measured and not taken)
    attend_max_blocks_few: float = float("inf")


@dataclass(frozen=True)
class DenseImpl:
    launches: int = 2  # split-KV attention + log-sum-exp merge
    # the kernels' grid: splits of S for at most `waves` whole waves of programs over the
    # compute units (whole_waves; else about `waves`, a part-filled last one). Kept here
    # beside the SparQ grid; the dense cost has no program term, so it does not read them
    waves: float = 1.0
    whole_waves: bool = True


def _pairs(w: Workload):
    return np.asarray(w.batch, dtype=np.float64) * w.n_kv_heads


def append_cost(w: Workload, method: str = "sparq", impl: SparqImpl = SparqImpl()) -> PhaseCost:
    """Write the new key and value; SparQ also writes the key into K^T and updates v_bar."""
    n, d, e, a = _pairs(w), w.d_head, w.kv_bytes, w.act_bytes
    reads = {"new_kv": n * 2 * d * a}
    writes = {"k_row": n * d * e, "v_row": n * d * e}
    if method == "sparq":
        if impl.k_transposed:
            # one element into each of d_h rows of K^T: each is a partial sector write
            writes["kt_column"] = n * d * np.maximum(e, impl.sector_bytes)
        reads["v_bar"] = n * d * STAT_BYTES
        writes["v_bar"] = n * d * STAT_BYTES
    return PhaseCost(P.APPEND, reads, writes, flops=n * d * 3.0 if method == "sparq" else 0.0)


def dense_attention_cost(w: Workload, impl: DenseImpl = DenseImpl()) -> PhaseCost:
    n, d, e, a, g, S = _pairs(w), w.d_head, w.kv_bytes, w.act_bytes, w.group_size, np.asarray(w.seq_len, np.float64)
    reads = {"K": n * S * d * e, "V": n * S * d * e, "q": n * g * d * a}
    writes = {"out": n * g * d * a}
    flops = n * g * S * (4.0 * d + SOFTMAX_FLOPS_PER_SCORE)
    return PhaseCost(P.DENSE_ATTENTION, reads, writes, flops, impl.launches)


def sparq_score_cost(w: Workload, impl: SparqImpl = SparqImpl()) -> PhaseCost:
    """Steps 1-3 (and the group sum of step 5): top-r of |q|, scores from r rows of K^T."""
    n, d, e, a, g = _pairs(w), w.d_head, w.kv_bytes, w.act_bytes, w.group_size
    S, r = np.asarray(w.seq_len, np.float64), np.asarray(w.r, np.float64)
    passes = 1 if w.group_size == 1 else impl.gqa_score_passes
    if impl.k_transposed:
        k_bytes = n * S * r * e * passes
    else:  # r scattered elements of each S-major row, a sector each, at most the whole row
        k_bytes = n * S * np.minimum(r * impl.sector_bytes, d * e)
    reads = {"q": n * g * d * a, "K_r_columns": k_bytes}
    writes = {"softmax_stats": n * g * 2 * STAT_BYTES}
    writes.update(score_writes(n, S, impl))
    flops = n * g * S * (2.0 * r + SOFTMAX_FLOPS_PER_SCORE) + n * S * g
    return PhaseCost(P.SPARQ_SCORE, reads, writes, flops, impl.score_launches)


def score_writes(n, positions, impl) -> dict:
    """What a scoring kernel stores for the selection: the fp32 scores, and with our filter
    selection (impl.sample_in_score) each row's sample too, 4 B per sampled key."""
    if not impl.scores_in_memory:
        return {}
    positions = np.asarray(positions, np.float64)
    out = {"scores": n * positions * STAT_BYTES}
    if impl.select_filter and impl.sample_in_score:
        m = plan.sample_size(positions)
        out["sample"] = n * np.where(m < positions, m * STAT_BYTES, 0.0)
    return out


def select_cost(name, n, positions, chosen, impl) -> PhaseCost:
    """Top-`chosen` of `positions` fp32 scores for each of n rows; int32 indices written.

    With impl.select_filter (our kernels, select_plan) and the scores in memory: the sampled
    keys (4 B each where the scoring kernel wrote them contiguously, impl.sample_in_score;
    else from the scores in runs of select_plan.sample_run keys, each run whole sectors),
    the candidates written and read back once, each an 8-byte key and position, a threshold per row (with the origin and scale of its bins), and
    the pick's histogram per row read and cleared, in three launches. Where the sure threshold
    is used (select_plan.uses_sure) the candidates are the band below it, and the keys above
    it are written straight as indices. The threshold and the pick are one program per row,
    over its sampled keys (bisected, twice with a sure threshold) and over its slots of
    candidates (read and scanned once): the serial terms (items = sample + slots). The
    histogram's bins are not counted there: with them the held-out select error at H200
    f23ebbc was 13.5 / 31.3 % (median / p90), without 8.4 / 27.3. The filter is a program per tile of FILTER_BLOCK scores, each counting, scanning
    and appending its tile (twice with a sure threshold: for the candidates and the sure
    keys): its grid. Where the rows are few enough (select_plan.threshold_in_filter; off by
    default) the filter's programs find the thresholds themselves: two launches, tiles of
    FILTER_BLOCK scores a warp of those holding the sample; the search each of a row's filter
    programs then redoes is not counted. Otherwise one ideal pass in one launch."""
    positions = np.asarray(positions, np.float64)
    reads = {"scores": n * positions * STAT_BYTES * impl.select_passes} if impl.scores_in_memory else {}
    writes = {"indices": n * chosen * INDEX_BYTES}
    if not (impl.select_filter and impl.scores_in_memory):
        return PhaseCost(name, reads, writes, n * positions * impl.select_passes, 1)
    m = plan.sample_size(positions)
    sure = plan.uses_sure(positions, chosen, m, n)  # then the filter writes the keys above it as indices
    # the keys picked from and the pick's slots: the thresholds' ranks at the sample's sigmas
    # (a strided sample's where the score kernel writes it); the room at SAMPLE_SIGMAS. (The
    # kernels' score filter, SCORE_FILTER, off, ranks its runs at 6: that path is not counted)
    sigmas = plan.rank_sigmas(impl.sample_in_score)
    c = plan.picked_from(positions, chosen, m, sure, sigmas)
    slots = plan.pick_slots_held(positions, chosen, m, sure, sigmas)
    # from the scores: runs of consecutive keys, each run whole sectors
    run = plan.sample_run(positions, m)
    per_key = STAT_BYTES if impl.sample_in_score else (
        np.ceil(run * STAT_BYTES / impl.sector_bytes) * impl.sector_bytes / run)
    reads["sample"] = n * np.where(m < positions, m * per_key, 0.0)
    bins = plan.pick_bins(positions)
    reads["candidates"] = n * c * (STAT_BYTES + INDEX_BYTES)
    reads["histogram"] = n * bins * STAT_BYTES
    writes["candidates"] = n * c * (STAT_BYTES + INDEX_BYTES)
    writes["histogram"] = n * bins * STAT_BYTES  # cleared for the next call (the filter's counts are L2 atomics)
    writes["threshold"] = n * 4 * STAT_BYTES  # thresholds, the bins' origin and scale
    passes = np.where(sure, 2.0, 1.0)  # of the sample's bisection, and of the filter's count and writes
    # where the rows are few the filter's programs find the thresholds themselves: one launch
    # fewer, tiles of FILTER_BLOCK scores a warp of those holding the sample
    here = plan.threshold_in_filter(n)
    tile = np.where(here, plan.FILTER_BLOCK * plan.threshold_in_filter_warps(m), plan.FILTER_BLOCK)
    grid = SplitGrid(n, positions, tile, np.inf, np.inf, weight=passes)
    return PhaseCost(name, reads, writes, n * positions * impl.select_passes, impl.select_launches - here,
                     serial_rows=n, serial_items=slots + m * passes, grids=(grid,))


def sparq_select_cost(w: Workload, impl: SparqImpl = SparqImpl()) -> PhaseCost:
    """Step 5: the k largest group-summed scores (l most recent forced in)."""
    return select_cost(P.SPARQ_SELECT, _pairs(w), w.seq_len, np.asarray(w.k, np.float64), impl)


def sparq_attend_cost(w: Workload, impl: SparqImpl = SparqImpl()) -> PhaseCost:
    """Steps 6-8: gather k rows of K and V, exact attention, alpha and v_bar mixing."""
    n, d, e, a, g = _pairs(w), w.d_head, w.kv_bytes, w.act_bytes, w.group_size
    k, r = np.asarray(w.k, np.float64), np.asarray(w.r, np.float64)
    reads = {
        "indices": n * k * INDEX_BYTES,
        "K_rows": n * k * d * e,
        "V_rows": n * k * d * e,
        "q": n * g * d * a,
        "softmax_stats": n * g * 2 * STAT_BYTES,
        "v_bar": n * d * STAT_BYTES,
    }
    writes = {"out": n * g * d * a}
    flops = n * g * (k * (4.0 * d + 2.0 * r + SOFTMAX_FLOPS_PER_SCORE) + 3.0 * d)
    launches = impl.attend_launches - (1 if w.group_size <= impl.merge_in_attend_max_g else 0)
    grid = SplitGrid(n, k, impl.attend_block_k, impl.attend_waves, impl.attend_waves_few, g > 1,
                     max_blocks_few=impl.attend_max_blocks_few)
    return PhaseCost(P.SPARQ_ATTEND, reads, writes, flops, launches, grids=(grid,))


def attention_costs(method: str, w: Workload, impl=None) -> dict[str, PhaseCost]:
    """Phase name -> cost, for one layer and the whole batch, append included."""
    if method == "dense":
        impl = impl or DenseImpl()
        return {P.APPEND: append_cost(w, "dense"), P.DENSE_ATTENTION: dense_attention_cost(w, impl)}
    if method == "sparq":
        impl = impl or SparqImpl()
        return {
            P.APPEND: append_cost(w, "sparq", impl),
            P.SPARQ_SCORE: sparq_score_cost(w, impl),
            P.SPARQ_SELECT: sparq_select_cost(w, impl),
            P.SPARQ_ATTEND: sparq_attend_cost(w, impl),
        }
    if method == "sparq-1xk":  # the paper's "1xK": K stored once, strided column reads
        impl = replace(impl or SparqImpl(), k_transposed=False)
        return attention_costs("sparq", w, impl)
    from .rivals import COSTS, rival_costs  # rivals build on this module's terms

    if method in COSTS:
        return rival_costs(method, w, impl)
    raise ValueError(f"no attention cost for method {method!r}")
