"""SparQ decode (Algorithm 1 of SPARQ.md) in three phases: score, select, attend.

sparq_score  steps 1-2 (top-r components of the group-summed |q| by a d x d rank count,
             1/tau, q masked to them) in a launch of their own, once per KV head, where
             the score has two passes (g > 1) or few rows; else in every score program.
             Then grid (B*H_kv, chunks of S): each program reads r rows of K^T over its
             chunk and writes one fp32 ranking score per position:
             - g == 1: the scaled approximate logit itself (softmax is monotone, so the
               top-k of logits is the top-k of s_hat), by r multiply-adds per position
               (r <= 16; else a tl.dot), and per chunk its softmax max/sum; one pass over K^T.
             - g > 1: the group sum of per-head s_hat needs each head's max and sum over
               all S first: a first launch writes only the per-chunk statistics, a second
               re-reads the r rows of K^T and writes the group-summed s_hat. Two passes
               over r rows of K^T.
             The last l positions get +inf (forced into the top k). The final scores at
             every stride-th position also go to a contiguous sample per row, which the
             selection's threshold reads. With one pass, K^T is loaded evict-first, so
             the scores stay in L2 for the filter, which reads them last written first.
sparq_select exact top-k in three launches (two where the filter finds the thresholds,
             threshold_in_filter), for any number of rows and lengths:
             a threshold per row, about a chosen rank of an evenly spread sample of the
             row (every stride-th position where the score kernel writes it, runs of 16
             consecutive ones where read from the scores; select_plan: sized so the
             threshold lies below the k-th largest score but for a vanishing fraction of
             rows) and, where it shrinks the pick, a sure
             threshold from the same sample, above which every key is in the top k but for
             as small a fraction; a filter over (rows, tiles of S) writing the positions of
             the keys above the sure threshold straight to the output and appending the
             keys between the two, with their positions, to the candidates (1.3-1.9 k at
             k = S/16 without a sure threshold, 1.2-1.6 k from the score kernel's sample;
             with one, a band growing as sqrt(k)) through
             per-row atomic counters, each counted in a histogram per row of bins from the
             threshold up (equal in ratio where the threshold is positive, else in score;
             the sample's span filling them); a pick, one
             program per row, taking the rest of the k from the candidates: the histogram
             names the bin of the kk-th largest, the positions of the keys above that bin
             are written after the sure ones, and the bin's few keys (about 10 at k = S/16)
             are ranked against each other, the highest written: no bisection. A bin of
             more than PICK_TIES keys (many ties), or the last, and the pick bisects over
             the candidates from memory. A row with more than k sure keys, too few
             candidates or more than their room is searched whole from memory instead:
             slow, never wrong. Exactly k positions, unsorted.
sparq_attend grid (B*H_kv, splits of k): gathers the k rows of K and V, exact attention for
             the g heads of the group, and alpha (s_hat recomputed from the gathered K rows
             with the masked q, normalised by the merged chunk statistics: no extra bytes),
             then the log-sum-exp merge of the splits applies (1-alpha)*v_bar mixing: for
             one head per group done by the last split program of each head, else by a
             launch of its own.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ._common import (INTERPRET, LOG2E, check_q, chunk_for, dot, grid_wait, last_split_merges, launch_merge,
                      launch_next, merge_args, n_splits_for, num_sms, pdl_args, pow2_bucket)
from .cache import KVCache
from sparq_perf import select_plan as plan
from sparq_perf.cost.attention import SparqImpl
from sparq_perf.cost.base import waves_for

# score positions per tile: 1024 for one head per group and r <= WIDE_SCORE_MAX_R, its logits
# by multiply-adds (SCORE_FMA; H100, r = 16: B=1 S=32k 23.2 -> 14.3 us, B=8 S=16k 77.8 -> 64.7,
# reports/kernels/tune_sparq_ab3e79f.json); otherwise 256 and a tl.dot (g > 1 heads per
# group, or r rows of K^T that make a wide tile too large: r = 64 ran 1.8x slower at 512)
BLOCK_S = 1024
BLOCK_S_NARROW = 256
WIDE_SCORE_MAX_R = 16
SCORE_WAVES = 8.0  # score grid: chunks of S for about this many waves over the SMs
# ... and SCORE_WAVES_FEW for g > 1 at most SCORE_FEW_ROWS_PER_SM rows per SM (H100, GQA:
# B=16 S=32k 136.8 -> 117.4 us; B=1 16.3 -> 15.1; B=64 S=8k keeps 8: 122.8 vs 145.9)
SCORE_WAVES_FEW = 4.0
SCORE_FEW_ROWS_PER_SM = 2
SCORE_WARPS = 4
SCORE_FMA = True
# steps 1-2 (a d x d rank count) in their own launch, once per KV head, where the score runs
# two passes (g > 1) or has few rows (at most TOPR_KERNEL_ROWS_PER_SM per SM); else in every
# score program (H100: 2048 rows 121 vs 137 us with the launch; 32 rows 14.3 vs 23.9)
TOPR_KERNEL_ROWS_PER_SM = 2
SCORE_TOPR_KERNEL = None  # None: that rule; True / False: always / never (tuning)
TOPR_WARPS = 4  # warps of _topr_kernel's programs (one per KV head)
BLOCK_K = SparqImpl.attend_block_k  # gathered rows per tile in attend: 64 x 256 B of K and of V in flight
# attend grid: splits of k for about ATTEND_WAVES waves over the SMs, ATTEND_WAVES_FEW where
# the groups share heads (g > 1) or the rows are fewer than the SMs: fewer, longer programs
# (H100, reports/kernels/tune_sparq_d35f6ba.json: B=1 S=32k 19.0 -> 16.0 us, GQA B=64 S=8k
# 65.6 -> 56.4; MHA B=8 S=16k and B=16 S=32k want 4: 63.6 vs 58.8, 225.7 vs 194.0)
# (the cost model counts the attend's programs from the same numbers)
ATTEND_WAVES = SparqImpl.attend_waves
ATTEND_WAVES_FEW = SparqImpl.attend_waves_few
# ... and there at most ATTEND_MAX_BLOCKS_FEW blocks of BLOCK_K rows a program (inf: no cap):
# more splits where k is long. triton 3.6 keeps one gathered tile of K and V in flight at 3
# stages (it double-buffers indirect loads from 5), so a long program waits on each tile in
# turn. H200: 4 waves at B=1 S=128k, k=8192 (15 blocks a program -> 8) ran the attend 50.7 ->
# 43.0 us (reports/kernels/tune_fixed_3b37989.json), but a cap of 8 (the same 512 rows a
# program) 49.7 -> 56.5 in the next run (tune_fixed_b95876e.json): not taken
ATTEND_MAX_BLOCKS_FEW = SparqImpl.attend_max_blocks_few
ATTEND_WARPS = 4
ATTEND_STAGES = 3
# ... and ATTEND_STAGES_FEW where the rows are few (as ATTEND_WAVES_FEW), a program gathers
# ATTEND_STAGES_FEW_MIN_BLOCKS tiles or more and d_h <= 128: two gathered tiles in flight.
# H200 (reports/kernels/tune_fixed_3b37989.json, _b95876e.json; attend us at 3 -> 5 stages):
# B=1 S=128k (15 tiles a program) 50.7 -> 45.9, GQA B=4 S=32k (4) 18.1 -> 16.0, B=1 S=32k (4)
# 16.1 -> 16.1; one tile a program loses the deeper prologue (B=1 S=8k 7.6 -> 8.5, GQA B=1 S=32k
# 8.7 -> 9.8) and many rows the occupancy (MHA B=16 S=32k, 512 rows: 140.4 -> 146.0). With the
# rule (tune_fixed_69946ca.json, 3 -> 5 stages): B=1 S=128k 50.5 -> 45.5, GQA B=4 17.6 -> 15.9
ATTEND_STAGES_FEW = 5
ATTEND_STAGES_FEW_MIN_BLOCKS = 2
ATTEND_STAGES_FEW_MAX_D = 128
# the attend's last split program of each KV head merges the partials (no merge launch)
# where a group has one head; with g heads it merges them one after another, which cost
# more than the launch (H100 step: MHA B=16 S=32k 792.6 -> 779.1 us; GQA B=1 60.5 -> 62.4).
# The cost model counts the launches from the same number.
FUSED_MERGE_MAX_G = SparqImpl.merge_in_attend_max_g
# L2 between the kernels of a step. g == 1: the score's K^T loads (read once) evicted first
# (SCORE_ONE_PASS_EVICT), so the scores it writes stay in L2, and the filter visits its tiles
# in the reverse of the order the score wrote them (FILTER_AGAINST_SCORE), the last written
# first. H200, queries rotated (reports/kernels/tune_fixed_bb39f97.json, step us, neither ->
# both): B=1 S=8k 32.3 -> 30.3, 32k 52.0 -> 51.5, 128k 152.0 -> 150.2, B=8 S=16k 125.1 -> 122.0, B=64
# S=4k 250.9 -> 246.5, B=16 S=32k 381.8 -> 379.4 (the score alone slower at B=16 S=32k, 165.5 ->
# 170.6, the selection after it faster by more; at B=1 S=32k each alone slower than neither).
# g > 1, the two passes: the second over its chunks in the reverse of the first's order
# (SCORE_SECOND_PASS_REVERSED: to start on the rows of K^T the first read last), the first's and
# the second's K^T loads under these policies ("": the default; "evict_last": kept for the
# second pass). Timed with one query a cache set (tune_fixed_ed17d79.json, L2 warm across
# calls): GQA B=16 score 87.8 -> 88.3 us reversed (no reuse seen), B=4 27.1 -> 29.2; not taken
SCORE_ONE_PASS_EVICT = "evict_first"
SCORE_SECOND_PASS_REVERSED = False
SCORE_FIRST_PASS_EVICT = ""
SCORE_SECOND_PASS_EVICT = ""
FILTER_AGAINST_SCORE = True
# g == 1: the selection's filter done by the score kernel on the scores it has just computed
# (no filter launch, no second read of the scores), its thresholds found before it, by a
# launch of one program a row that does steps 1-2 and scores the row's sample itself
# (_sample_kernel: runs of up to SAMPLE_RUN consecutive positions of each K^T row); the
# select phase is then the pick alone (runners: timed only with the score). H200, step us,
# default -> the best of four sample settings (reports/kernels/tune_fixed_d558a10.json): B=1
# S=8k 31.5 -> 30.6, S=32k 51.6 -> 57.1, S=128k 150.0 -> 176.0, B=8 S=16k 121.8 -> 130.1, B=64
# S=4k 246.9 -> 283.9, B=16 S=32k 379.2 -> 370.4: slower at four of six, so off (the score
# with the filter holds 133 registers a thread, not 64; experiments/NOTES.md)
SCORE_FILTER = False
SCORE_FILTER_MAXNREG = None  # a cap on the filtering score kernel's registers a thread (None: the compiler's)
SAMPLE_RUN = 16  # consecutive positions a run of the sample kernel's sample (at most; sample_kernel_run)
SAMPLE_MIN_RUNS = 32  # ... so that a sample has at least this many runs (or is the row)
SAMPLE_TILE = 1024  # sampled keys a loop step of the sample kernel
SAMPLE_MIN_WARPS = 4  # the sample kernel's warps: as the threshold kernel's, at least this many


def sample_kernel_run(n: int) -> int:
    """Positions a run of the sample kernel's sample of n keys (a power of two, at most
    SAMPLE_RUN, leaving at least SAMPLE_MIN_RUNS runs where n allows; the selection alone
    reads its sample in runs of select_plan.sample_run)."""
    run = SAMPLE_RUN
    while run > 1 and n // run < SAMPLE_MIN_RUNS:
        run //= 2
    return run


def score_fma(G: int, r: int) -> bool:
    return SCORE_FMA and G == 1 and r <= WIDE_SCORE_MAX_R


def score_block(G: int, r: int) -> int:
    return BLOCK_S if G == 1 and r <= WIDE_SCORE_MAX_R else BLOCK_S_NARROW


def score_waves(G: int, rows: int) -> float:
    return SCORE_WAVES_FEW if G > 1 and rows <= SCORE_FEW_ROWS_PER_SM * num_sms() else SCORE_WAVES


def attend_waves(G: int, rows: int) -> float:
    return float(waves_for(rows, num_sms(), ATTEND_WAVES, ATTEND_WAVES_FEW, G > 1))


def attend_max_blocks(G: int, rows: int) -> float:
    return float(waves_for(rows, num_sms(), math.inf, ATTEND_MAX_BLOCKS_FEW, G > 1))


def attend_stages(G: int, rows: int, d: int, blocks: int) -> int:
    """The attend's pipeline stages for `rows` rows of a group of G heads, d_h = d, `blocks`
    gathered tiles a program."""
    few = bool(waves_for(rows, num_sms(), False, True, G > 1))
    deep = few and blocks >= ATTEND_STAGES_FEW_MIN_BLOCKS and d <= ATTEND_STAGES_FEW_MAX_D
    return ATTEND_STAGES_FEW if deep else ATTEND_STAGES


def fused_merge(G: int) -> bool:
    return G <= FUSED_MERGE_MAX_G


def filter_reversed(G: int) -> bool:
    """Whether the filter after the score visits its tiles last first: where one pass
    wrote the scores in the grid's order and FILTER_AGAINST_SCORE (g > 1: never)."""
    return FILTER_AGAINST_SCORE and G == 1


def score_filter(G: int) -> bool:
    """Whether the score kernel filters its scores (SCORE_FILTER; one head per group only)."""
    return SCORE_FILTER and G == 1


def topr_kernel(G: int, rows: int) -> bool:
    if SCORE_TOPR_KERNEL is not None:
        return SCORE_TOPR_KERNEL
    return G > 1 or rows <= TOPR_KERNEL_ROWS_PER_SM * num_sms()


@triton.jit
def _top_r(Q, b, h, r, sQb, sQh, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
           RP: tl.constexpr):
    """Steps 1-2 for one KV head: i1 [RP] (slot -> component of the top r of |q| summed over
    the group; slots >= r hold 0), q [GP, DP] (fp32), the rank of each component, and
    1/tau per query head [GP]."""
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, DP)
    offs_r = tl.arange(0, RP)
    gm = offs_g < G
    dm = offs_d < D
    q_ptr = Q + b * sQb + (h * G + offs_g)[:, None] * sQh
    q = tl.load(q_ptr + offs_d[None, :], mask=gm[:, None] & dm[None, :], other=0.0).to(tl.float32)
    # rank_i = #{j beating i}, ties by index
    a = tl.sum(tl.abs(q), 0)
    a = tl.where(dm, a, -1.0)
    beats = (a[None, :] > a[:, None]) | ((a[None, :] == a[:, None]) & (offs_d[None, :] < offs_d[:, None]))
    rank = tl.sum(beats.to(tl.int32), 1)  # [DP]
    i1 = tl.sum(tl.where(rank[None, :] == offs_r[:, None], offs_d[None, :], 0), 1)  # slot -> component
    # tau = sqrt(d * |q[i1]|_1 / |q|_1), per query head
    l1_all = tl.sum(tl.abs(q), 1)
    l1_sel = tl.sum(tl.where((rank < r)[None, :], tl.abs(q), 0.0), 1)
    inv_tau = tl.where(gm, tl.sqrt(tl.where(gm, l1_all, 1.0) / (D * tl.where(gm, l1_sel, 1.0))), 0.0)
    return i1, q, rank, inv_tau


@triton.jit
def _store_top_r(QM, INV_TAU, b, h, q, rank, inv_tau, r, HKV, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                 DP: tl.constexpr):
    """What attend reads of steps 1-2: q masked to its top-r components and 1/tau, per query head."""
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, DP)
    gm = offs_g < G
    hq = b * HKV * G + h * G + offs_g
    tl.store(QM + hq[:, None] * D + offs_d[None, :], tl.where((rank < r)[None, :], q, 0.0).to(QM.dtype.element_ty),
             mask=gm[:, None] & (offs_d < D)[None, :])
    tl.store(INV_TAU + hq, inv_tau, mask=gm)


@triton.jit
def _topr_kernel(Q, I1, QM, INV_TAU, r, sQb, sQh, HKV, G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr,
                 DP: tl.constexpr, RP: tl.constexpr, PDL: tl.constexpr):
    """Grid (B*H_kv,): steps 1-2 once per KV head, for every score program and for attend:
    I1 [rows, RP], q masked to its top-r components (QM) and 1/tau per query head."""
    grid_wait(PDL)
    pid = tl.program_id(0).to(tl.int64)
    b = pid // HKV
    h = pid % HKV
    i1, q, rank, inv_tau = _top_r(Q, b, h, r, sQb, sQh, G, GP, D, DP, RP)
    launch_next(PDL)
    tl.store(I1 + pid * RP + tl.arange(0, RP), i1)
    _store_top_r(QM, INV_TAU, b, h, q, rank, inv_tau, r, HKV, G, GP, D, DP)


@triton.jit
def _store_sample(dst, score, pos, valid, s_stride, n_sample):
    """The row's threshold sample, written where it is computed: the scores at positions
    i * s_stride, i < n_sample, stored contiguously at dst[i]."""
    i = pos // s_stride
    tl.store(dst + i, score, mask=valid & (pos == i * s_stride) & (i < n_sample))


@triton.jit
def _one_head_q(q_sel, scale):
    """One head per group: its query at the top-r components [RP] (fp32) and its logits'
    scale, from the [GP, RP] tile and [GP] scales whose padded rows are zero."""
    return tl.sum(q_sel.to(tl.float32), 0), tl.sum(scale, 0)


@triton.jit
def _one_head_logits(q1, kt, scale1):
    """The one head's scaled approximate logits (log2 domain) [BLOCK] from the r rows of K^T
    [RP, BLOCK]: r multiply-adds a position (the score kernel's and the sample kernel's)."""
    return tl.sum(q1[:, None] * kt.to(tl.float32), 0) * scale1


@triton.jit
def _score_kernel(
    Q, KT, SCORES, SAMPLE, QM, INV_TAU, I1, M_PART, L_PART,
    S, S_load, chunk, n_chunks, l_window, r, s_stride, n_sample,
    sQb, sQh, sTb, sTh, sTd, sMb, sMh,
    HKV,
    THRESH, CAND, COUNT, SURE, IDX, HIST, k, cap,  # the selection's workspace (FILTER)
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
    RP: tl.constexpr,  # r rounded up to a power of two >= 16 (a tl.dot dimension)
    BLOCK_S: tl.constexpr,
    NCP: tl.constexpr,  # chunks rounded up to a power of two (statistics merge, pass 2)
    PASS: tl.constexpr,  # 0: logits + statistics (g == 1); 1: statistics only; 2: group-summed s_hat
    TOPR_GIVEN: tl.constexpr,  # steps 1-2 done by _topr_kernel (I1, INV_TAU) rather than here
    FMA: tl.constexpr,  # g == 1: logits as r multiply-adds per position, not a 16-row tl.dot
    REVERSED: tl.constexpr,  # chunks in the reverse of the grid's order (the last first)
    KT_EVICT: tl.constexpr,  # the K^T loads' L2 eviction policy ("": the default)
    UPCAST: tl.constexpr,
    PDL: tl.constexpr,
    FILTER: tl.constexpr = False,  # PASS 0: the filter on each tile of its scores (_filter_tile), no sample written
    HAS_SURE: tl.constexpr = False, NB: tl.constexpr = 1, BIN_BRANCH: tl.constexpr = True,  # the filter's
    ASM_WRITES: tl.constexpr = False,
):
    tl.static_assert(not FILTER or PASS == 0, "the score filters only where one pass writes the scores (g == 1)")
    grid_wait(PDL)
    pid = tl.program_id(0).to(tl.int64)
    chunk_id = tl.program_id(1)
    if REVERSED:
        chunk_id = n_chunks - 1 - chunk_id
    b = pid // HKV
    h = pid % HKV
    offs_g = tl.arange(0, GP)
    offs_r = tl.arange(0, RP)
    gm = offs_g < G
    rm = offs_r < r
    hq = h * G + offs_g  # query heads of this group
    q_ptr = Q + b * sQb + hq[:, None] * sQh
    if TOPR_GIVEN:
        i1 = tl.load(I1 + pid * RP + offs_r)
        inv_tau = tl.load(INV_TAU + b * HKV * G + hq, mask=gm, other=0.0)
    else:
        i1, q, rank, inv_tau = _top_r(Q, b, h, r, sQb, sQh, G, GP, D, DP, RP)
        if PASS != 2:
            if chunk_id == 0:
                _store_top_r(QM, INV_TAU, b, h, q, rank, inv_tau, r, HKV, G, GP, D, DP)
    q_sel = tl.load(q_ptr + i1[None, :], mask=gm[:, None] & rm[None, :], other=0.0)  # [GP, RP]
    scale = inv_tau * 1.4426950408889634  # log2 domain
    stat_row = (b * HKV * G + hq) * n_chunks  # [GP]
    if PASS == 2:
        offs_c = tl.arange(0, NCP)
        cm = gm[:, None] & (offs_c[None, :] < n_chunks)
        mc = tl.load(M_PART + stat_row[:, None] + offs_c[None, :], mask=cm, other=-float("inf"))
        lc = tl.load(L_PART + stat_row[:, None] + offs_c[None, :], mask=cm, other=0.0)
        m_tot = tl.max(mc, 1)
        m_tot = tl.where(gm, m_tot, 0.0)
        l_tot = tl.sum(tl.where(cm, lc * tl.exp2(mc - m_tot[:, None]), 0.0), 1)
        inv_l = tl.where(gm, 1.0 / tl.where(gm, l_tot, 1.0), 0.0)
    kt_base = KT + b * sTb + h * sTh + i1[:, None].to(tl.int64) * sTd  # [RP, 1]
    if FILTER:  # the row's thresholds, from the sample kernel before
        t_lo, x_lo, w = _bin_params(THRESH + 4 * pid)
        t_sure = tl.load(THRESH + 4 * pid + 1).to(tl.uint32, bitcast=True)
    start = chunk_id * chunk
    end = tl.minimum(start + chunk, S)
    m_i = tl.full([GP], -float("inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    m_s = tl.full([], -float("inf"), tl.float32)
    l_s = tl.zeros([], tl.float32)
    if FMA:
        q1, scale1 = _one_head_q(q_sel, scale)
    offs_s = tl.arange(0, BLOCK_S)
    for n0 in range(start, end, BLOCK_S):
        pos = n0 + offs_s
        nm = pos < end
        # masked at S_load (a multiple of 16 when the rows have room): 16-byte loads
        kt = tl.load(kt_base + pos[None, :], mask=rm[:, None] & (pos < S_load)[None, :], other=0.0,
                     eviction_policy=KT_EVICT)  # [RP, BLOCK_S]
        forced = pos >= S - l_window  # step 4
        if FMA:  # the one head's logits, [BLOCK_S]
            score = _one_head_logits(q1, kt, scale1)
        else:
            z = dot(q_sel, kt, UPCAST) * scale[:, None]  # step 3 logits, log2 domain, [GP, BLOCK_S]
        if PASS == 0:  # one head: its statistics from its [BLOCK_S] logits, not the padded rows
            if not FMA:
                score = tl.sum(tl.where(gm[:, None], z, 0.0), 0)
            zs = tl.where(nm, score, -float("inf"))
            m_new = tl.maximum(m_s, tl.max(zs, 0))
            l_s = l_s * tl.exp2(m_s - m_new) + tl.sum(tl.exp2(zs - m_new), 0)
            m_s = m_new
            score = tl.where(forced, float("inf"), score)
            tl.store(SCORES + pid * S + pos, score, mask=nm)
            if FILTER:
                _filter_tile(score, pos, nm, pid, t_lo, t_sure, x_lo, w, CAND, COUNT, SURE, IDX, HIST, k, cap,
                             BLOCK_S, HAS_SURE, NB, BIN_BRANCH, 0, ASM_WRITES)
            else:
                _store_sample(SAMPLE + pid * n_sample, score, pos, nm, s_stride, n_sample)
        if PASS == 1:
            zm = tl.where(nm[None, :] & gm[:, None], z, -float("inf"))
            m_new = tl.maximum(m_i, tl.max(zm, 1))
            l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(zm - m_new[:, None]), 1)
            m_i = m_new
        if PASS == 2:
            s_hat = tl.exp2(z - m_tot[:, None]) * inv_l[:, None]
            score = tl.sum(tl.where(gm[:, None], s_hat, 0.0), 0)  # step 5: group sum
            score = tl.where(forced, float("inf"), score)
            tl.store(SCORES + pid * S + pos, score, mask=nm)
            _store_sample(SAMPLE + pid * n_sample, score, pos, nm, s_stride, n_sample)
    launch_next(PDL)
    if PASS == 0:
        m_i = m_s + l_i  # [GP]: only the first (the one head) is stored
        l_i = l_s + l_i
    if PASS != 2:
        tl.store(M_PART + stat_row + chunk_id, m_i, mask=gm)
        tl.store(L_PART + stat_row + chunk_id, l_i, mask=gm)


@triton.jit
def _order_key(x):
    """fp32 -> uint32 whose unsigned order is the float order (+inf largest)."""
    bits = x.to(tl.uint32, bitcast=True)
    return tl.where((bits >> 31) != 0, ~bits, bits | 0x80000000)


@triton.jit
def _key_value(key):
    """The fp32 whose order key (_order_key) this uint32 is."""
    return tl.where((key >> 31) != 0, key & 0x7FFFFFFF, ~key).to(tl.float32, bitcast=True)


@triton.jit
def _bit(n):
    """1 << n as uint32 (n an int or an int32 scalar in [0, 31])."""
    return tl.full([], 1, tl.uint32) << (tl.zeros([], tl.int32) + n).to(tl.uint32)


# the interpreter runs a tuple reduction's combine in Python, element by element: there the
# three counts are three sums (the same numbers); compiled, one reduction waits once
TUPLE_REDUCE = tl.constexpr(not INTERPRET)


@triton.jit
def _add3(a0, b0, c0, a1, b1, c1):
    return a0 + a1, b0 + b1, c0 + c1


@triton.jit
def _count3(key, lo, hi, both):
    """#(key >= lo), #(key >= hi), #(key >= both) over a block."""
    if TUPLE_REDUCE:
        return tl.reduce(((key >= lo).to(tl.int32), (key >= hi).to(tl.int32), (key >= both).to(tl.int32)), 0, _add3)
    else:
        return (tl.sum((key >= lo).to(tl.int32), 0), tl.sum((key >= hi).to(tl.int32), 0),
                tl.sum((key >= both).to(tl.int32), 0))


@triton.jit
def _narrow(t, kk, lo, hi, both, n_lo, n_hi, n_both):
    return tl.where(n_both >= kk, both, tl.where(n_hi >= kk, hi, tl.where(n_lo >= kk, lo, t)))


@triton.jit
def _kth_largest(key, kk, base, nbits):
    """Largest t with #(key >= t) >= kk, given that every key counted shares base's bits
    above the lowest nbits (base has those nbits clear). Two bits per round: three counts
    in one block reduction, so ceil(nbits / 2) reductions wait on each other."""
    t = base
    for j in range(nbits // 2):
        lo = t | _bit(nbits - 2 - 2 * j)
        hi = t | _bit(nbits - 1 - 2 * j)
        n_lo, n_hi, n_both = _count3(key, lo, hi, lo | hi)
        t = _narrow(t, kk, lo, hi, lo | hi, n_lo, n_hi, n_both)
    if nbits % 2 == 1:
        lo = t | _bit(0)
        t = tl.where(tl.sum((key >= lo).to(tl.int32), 0) >= kk, lo, t)
    return t


@triton.jit
def _add6(a0, b0, c0, d0, e0, f0, a1, b1, c1, d1, e1, f1):
    return a0 + a1, b0 + b1, c0 + c1, d0 + d1, e0 + e1, f0 + f1


@triton.jit
def _kth_largest_two(key, k1, k2, nbits):
    """_kth_largest for two ranks of the same keys (base 0) at once: each round's six counts
    (three a search) in one block reduction, so the two searches wait on ceil(nbits / 2)
    reductions together, not on twice that one after the other."""
    t1 = tl.zeros([], tl.uint32)
    t2 = tl.zeros([], tl.uint32)
    for j in range(nbits // 2):
        b_lo = _bit(nbits - 2 - 2 * j)
        b_hi = _bit(nbits - 1 - 2 * j)
        lo1, hi1, lo2, hi2 = t1 | b_lo, t1 | b_hi, t2 | b_lo, t2 | b_hi
        if TUPLE_REDUCE:
            a1, c1, e1, a2, c2, e2 = tl.reduce(
                ((key >= lo1).to(tl.int32), (key >= hi1).to(tl.int32), (key >= (lo1 | hi1)).to(tl.int32),
                 (key >= lo2).to(tl.int32), (key >= hi2).to(tl.int32), (key >= (lo2 | hi2)).to(tl.int32)),
                0, _add6)
        else:
            a1, c1, e1 = _count3(key, lo1, hi1, lo1 | hi1)
            a2, c2, e2 = _count3(key, lo2, hi2, lo2 | hi2)
        t1 = _narrow(t1, k1, lo1, hi1, lo1 | hi1, a1, c1, e1)
        t2 = _narrow(t2, k2, lo2, hi2, lo2 | hi2, a2, c2, e2)
    if nbits % 2 == 1:
        lo1 = t1 | _bit(0)
        lo2 = t2 | _bit(0)
        t1 = tl.where(tl.sum((key >= lo1).to(tl.int32), 0) >= k1, lo1, t1)
        t2 = tl.where(tl.sum((key >= lo2).to(tl.int32), 0) >= k2, lo2, t2)
    return t1, t2


@triton.jit
def _bit_length(x):
    n = tl.zeros([], tl.int32)
    for i in tl.static_range(32):
        n = tl.where((x >> i) != 0, i + 1, n)
    return n


@triton.jit
def _threshold_kernel(SRC, THRESH, row_stride, stride, n, rank, rank_sure, NS: tl.constexpr, NB_LOG2: tl.constexpr,
                      JOINT: tl.constexpr, PDL: tl.constexpr, RUN: tl.constexpr = 1):
    """Grid (rows,): about the rank-th largest key of a row's sample of n <= NS keys, read at
    SRC[row * row_stride + (i // RUN) * RUN * stride + i % RUN] (the scores in runs of RUN
    consecutive positions, one run every RUN * stride, or with RUN * stride = 1 the sample the
    score kernel wrote contiguously): the top 16 bits of that key, the rest
    cleared, so at most that key and below it by under 1/128 of its value (7 mantissa bits kept);
    where rank_sure > 0, the sure threshold just above the rank_sure-th largest sampled
    key (its top 16 bits rounded up), else 0xFFFFFFFF; and the pick's bins, 2**NB_LOG2 of
    them, from the threshold up to the sure threshold (without one, the sample's largest
    finite key: +inf marks the forced local window), the last holding every key from there
    up (_bin_of): where the threshold's score
    is positive, equal in order key (in the exponent and leading mantissa bits: in ratio,
    as suits summed softmax weights), the least shift that puts that span in fewer than
    2**NB_LOG2 bins of (key - threshold) >> shift; else equal in score (a threshold near
    or below zero spans every small exponent), the bins per unit of score (0 where not
    finite: every finite key in the first bin, +inf and NaN in the last). JOINT: the two
    searches in the same rounds (_kth_largest_two), else one after the other. THRESH[row] =
    (threshold, sure, threshold's score, shift or bins per unit) as int32 bits."""
    grid_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    t, t_sure, x_lo, w = _row_thresholds(SRC, row, row_stride, stride, n, rank, rank_sure, NS, NB_LOG2, JOINT, PDL,
                                         RUN)
    _store_thresholds(THRESH + 4 * row, t, t_sure, x_lo, w)


@triton.jit
def _store_thresholds(THRESH_ROW, t, t_sure, x_lo, w):
    tl.store(THRESH_ROW, t.to(tl.int32, bitcast=True))
    tl.store(THRESH_ROW + 1, t_sure.to(tl.int32, bitcast=True))
    tl.store(THRESH_ROW + 2, x_lo.to(tl.int32, bitcast=True))
    tl.store(THRESH_ROW + 3, w)


@triton.jit
def _sample_kernel(Q, KT, SAMPLE, THRESH, QM, INV_TAU, I1, S, l_window, r, run_step, n, rank, rank_sure,
                   sQb, sQh, sTb, sTh, sTd, HKV,
                   G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, RP: tl.constexpr,
                   RUN: tl.constexpr, TILE: tl.constexpr, NS: tl.constexpr, NB_LOG2: tl.constexpr,
                   JOINT: tl.constexpr, PDL: tl.constexpr):
    """Grid (B*H_kv,), one head per group (the score's filter after it, SCORE_FILTER): steps 1-2
    as _topr_kernel, then the row's threshold sample scored here, before the score kernel:
    the scaled approximate logits (as the score kernel's multiply-adds) at n positions in runs
    of RUN consecutive ones (RUN x 2 bytes of each of the r rows of K^T), one run every run_step
    positions, the last l_window +inf; written to SAMPLE[row, :n] (run after run), then the
    row's thresholds and bins from it (_row_thresholds) to THRESH[row], for the filter."""
    grid_wait(PDL)
    pid = tl.program_id(0).to(tl.int64)
    b = pid // HKV
    h = pid % HKV
    i1, q, rank_d, inv_tau = _top_r(Q, b, h, r, sQb, sQh, G, GP, D, DP, RP)
    tl.store(I1 + pid * RP + tl.arange(0, RP), i1)
    _store_top_r(QM, INV_TAU, b, h, q, rank_d, inv_tau, r, HKV, G, GP, D, DP)
    offs_g = tl.arange(0, GP)
    offs_r = tl.arange(0, RP)
    gm = offs_g < G
    rm = offs_r < r
    q_ptr = Q + b * sQb + (h * G + offs_g)[:, None] * sQh
    q_sel = tl.load(q_ptr + i1[None, :], mask=gm[:, None] & rm[None, :], other=0.0)  # [GP, RP], as the score's
    q1, scale1 = _one_head_q(q_sel, inv_tau * 1.4426950408889634)
    kt_base = KT + b * sTb + h * sTh + i1[:, None].to(tl.int64) * sTd  # [RP, 1]
    offs = tl.arange(0, TILE)
    for i0 in range(0, n, TILE):
        i = i0 + offs  # sample slots
        pos = _run_positions(i, RUN, run_step)
        m = i < n  # (then pos < n * (S // n) <= S; a mask on pos < S would cost the vector loads where S % 16 != 0)
        kt = tl.load(kt_base + pos[None, :], mask=rm[:, None] & m[None, :], other=0.0)  # [RP, TILE]
        score = _one_head_logits(q1, kt, scale1)
        score = tl.where(pos >= S - l_window, float("inf"), score)
        tl.store(SAMPLE + pid * n + i, score, mask=m)
    tl.debug_barrier()  # the whole sample written before any thread reads it back
    t, t_sure, x_lo, w = _row_thresholds(SAMPLE, pid, n, 1, n, rank, rank_sure, NS, NB_LOG2, JOINT, PDL, 1)
    _store_thresholds(THRESH + 4 * pid, t, t_sure, x_lo, w)


@triton.jit
def _run_positions(i, RUN: tl.constexpr, run_step):
    """Positions of sample slots i taken in runs of RUN consecutive positions, one run every
    run_step (RUN = run_step = 1: the slots themselves)."""
    return (i // RUN) * run_step + i % RUN


@triton.jit
def _row_thresholds(SRC, row, row_stride, stride, n, rank, rank_sure, NS: tl.constexpr, NB_LOG2: tl.constexpr,
                    JOINT: tl.constexpr, PDL: tl.constexpr, RUN: tl.constexpr):
    """_threshold_kernel's work for one row: (threshold, sure threshold) as order keys, the
    threshold's score and the bins' shift or bins per unit (int32 bits). PDL: the next kernel
    let launch once the threshold is known (0: not here)."""
    i = tl.arange(0, NS)
    in_sample = i < n
    at = _run_positions(i.to(tl.int64), RUN, RUN * stride)
    sample = tl.where(in_sample, _order_key(tl.load(SRC + row * row_stride + at, mask=in_sample, other=0.0)), 0)
    key16 = sample >> 16
    t_sure = tl.full([], 0xFFFFFFFF, tl.uint32)  # none: no key lies above it
    top = tl.max(tl.where(sample < 0xFF800000, sample, 0), 0)  # the largest finite key (+inf: forced positions)
    if rank_sure > 0:
        if JOINT:
            t, h = _kth_largest_two(key16, rank, rank_sure, 16)
            t = t << 16
            launch_next(PDL)
        else:  # the next kernel let launch once the lower threshold is known, as before the joint rounds
            t = _kth_largest(key16, rank, tl.zeros([], tl.uint32), 16) << 16
            launch_next(PDL)
            h = _kth_largest(key16, rank_sure, tl.zeros([], tl.uint32), 16)
        t_sure = tl.where(h >= 0xFFFF, t_sure, (h + 1) << 16)  # above that key: its top 16 bits rounded up
        top = tl.minimum(top, t_sure)
    else:
        t = _kth_largest(key16, rank, tl.zeros([], tl.uint32), 16) << 16
        launch_next(PDL)
    x_lo = _key_value(t)
    scale = ((1 << NB_LOG2) - 1) / (_key_value(top) - x_lo)
    scale = tl.where((scale > 0) & (scale < float("inf")) & (x_lo > float("-inf")), scale, 0.0)
    shift = _bit_length(tl.where(top > t, top - t, 0) >> NB_LOG2)
    return t, t_sure, x_lo, tl.where(x_lo > 0, shift, scale.to(tl.int32, bitcast=True))


# Tiles whose keys are then stored scattered (the candidates, positions) are loaded one
# element a thread at a time (SCALAR_LOADS; the filter's FILTER_SCALAR_LOADS, the pick's
# PICK_SCALAR_LOADS): tl.max_contiguous(offsets, 1) where the offsets are made (it marks the
# op that makes them, so it must stand there, not in a helper). A vector load's
# layout (several contiguous elements a thread) differs from the one Triton gives scattered
# stores (one a thread), and every value, mask and 64-bit pointer of the tile would move
# between them through shared memory with barriers: the pick's main path had seven such
# conversions of its 4096 slots (103 barriers -> 67), the filter three of its 512 keys (sm_90,
# triton 3.6). A warp still reads whole lines: consecutive threads, consecutive elements.


@triton.jit
def _filter_kernel(SCORES, THRESH, CAND, COUNT, SURE, IDX, HIST, S, k, cap,
                   SRC, row_stride, stride, n, rank, rank_sure,  # the sample, as _threshold_kernel's (HERE)
                   BLOCK: tl.constexpr, HAS_SURE: tl.constexpr, NB: tl.constexpr, BIN_BRANCH: tl.constexpr,
                   SCALAR_LOADS: tl.constexpr, REVERSED: tl.constexpr,
                   HERE: tl.constexpr, NS: tl.constexpr, NB_LOG2: tl.constexpr, JOINT: tl.constexpr,
                   PDL: tl.constexpr, ASM_WRITES: tl.constexpr = False, RUN: tl.constexpr = 1):
    """Grid (rows, tiles of S): the positions of one tile's keys at or above the row's sure
    threshold go straight to the row's output, through the row's SURE counter (at most k of
    them written; the counter counts past k); the keys at or above its threshold and below
    the sure one are appended, with their positions, to the row's candidates through its
    COUNT counter (which counts past cap too), and each is counted in its bin of the row's
    histogram HIST[row] (_bin_of). HAS_SURE False: no sure threshold (its count and writes
    compiled out). With PDL the tile's scores (written two launches back or more: by the score
    kernel, or before the threshold kernel) are loaded before the wait for the threshold
    kernel, at L2 (.cg: no line of them an earlier kernel left in this SM's L1 is read).
    REVERSED: the tiles in the reverse of the grid's order (the last first). HERE: no
    threshold kernel before it; each program finds the row's thresholds from its sample itself
    (_row_thresholds: the same for every program of the row), and the row's first tile's
    stores them in THRESH for the pick; then the scores are loaded after the wait (the
    kernel before wrote them)."""
    row = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    if REVERSED:
        tile = tl.num_programs(1) - 1 - tile
    pos = tile * BLOCK + tl.arange(0, BLOCK)
    valid = pos < S
    if SCALAR_LOADS:
        pos = tl.max_contiguous(pos, 1)
    if HERE:
        grid_wait(PDL)
        x = tl.load(SCORES + row * S + pos, mask=valid, other=0.0, cache_modifier=".cg")
        t_lo, t_sure, x_lo, w = _row_thresholds(SRC, row, row_stride, stride, n, rank, rank_sure, NS, NB_LOG2, JOINT,
                                                0, RUN)
        if tile == 0:
            _store_thresholds(THRESH + 4 * row, t_lo, t_sure, x_lo, w)
    else:
        x = tl.load(SCORES + row * S + pos, mask=valid, other=0.0, cache_modifier=".cg")
        grid_wait(PDL)
        t_lo, x_lo, w = _bin_params(THRESH + 4 * row)
        t_sure = tl.load(THRESH + 4 * row + 1).to(tl.uint32, bitcast=True)
    _filter_tile(x, pos, valid, row, t_lo, t_sure, x_lo, w, CAND, COUNT, SURE, IDX, HIST, k, cap,
                 BLOCK, HAS_SURE, NB, BIN_BRANCH, PDL, ASM_WRITES)


@triton.jit
def _filter_tile(x, pos, valid, row, t_lo, t_sure, x_lo, w, CAND, COUNT, SURE, IDX, HIST, k, cap,
                 BLOCK: tl.constexpr, HAS_SURE: tl.constexpr, NB: tl.constexpr, BIN_BRANCH: tl.constexpr,
                 PDL: tl.constexpr, ASM_WRITES: tl.constexpr):
    """One tile's part of the filter (_filter_kernel), on scores x at positions pos (valid)
    of a row whose thresholds are given: the sure keys' positions to the output, the
    candidates appended and counted in their bins. PDL: the next kernel let launch between
    the two (0: not here)."""
    key = _order_key(x)
    take = valid & (key >= t_lo)
    if HAS_SURE:
        sure = valid & (key >= t_sure)
        n_sure = tl.sum(sure.to(tl.int32), 0)
        if n_sure > 0:
            slot = tl.atomic_add(SURE + row, n_sure, sem="relaxed") + tl.cumsum(sure.to(tl.int32), 0) - 1
            if ASM_WRITES:
                # past k: the pick searches the whole row instead (the last slot's write is lost)
                _store_where(sure, IDX + row * k + tl.minimum(slot, k - 1), pos)
            else:
                tl.store(IDX + row * k + slot, pos, mask=sure & (slot < k))
        take = take & (key < t_sure)
    launch_next(PDL)
    n_take = tl.sum(take.to(tl.int32), 0)
    if n_take > 0:
        slot = tl.atomic_add(COUNT + row, n_take, sem="relaxed") + tl.cumsum(take.to(tl.int32), 0) - 1
        b = _bin_of(x, key, t_lo, x_lo, w, NB, BIN_BRANCH)
        if ASM_WRITES:
            # past the room: the pick searches the whole row instead (the last slot's write is lost)
            _append_and_count(take, CAND + row * cap + tl.minimum(slot, cap - 1), key, pos, HIST + row * NB + b)
        else:
            tl.store(CAND + row * cap + slot, _pack(key, pos), mask=take & (slot < cap))
            tl.atomic_add(HIST + row * NB + b, tl.full([BLOCK], 1, tl.int32), mask=take, sem="relaxed")


@triton.jit
def _store_where(m, ptr, v):
    """tl.store(ptr, v, mask=m) of 32-bit v by a predicated PTX store an element, in v's layout
    (as _append_and_count)."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; @p st.global.b32 [$2], $3; mov.b32 $0, 0; }",
        "=r,r,l,r", [m.to(tl.int32), ptr, v], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _append_and_count(take, cand, key, pos, hist):
    """Each taken key counted in its bin (a relaxed add at `hist`) and stored at `cand` as
    _pack would (position in the low word, order key in the high), by one predicated PTX
    store and reduction an element: in the layout the keys were loaded in.
    (tl.store and tl.atomic_add with data-dependent addresses take one element a thread:
    every pointer, mask and value would move between the layouts through shared memory.)"""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $1, 0; "
        "@p st.global.v2.b32 [$2], {$3, $4}; @p red.global.add.u32 [$5], 1; mov.b32 $0, 0; }",
        "=r,r,l,r,r,l", [take.to(tl.int32), cand, pos, key.to(tl.int32, bitcast=True), hist],
        dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _pack(key, pos):
    """A candidate as one int64: its order key in the high word, its position (>= 0) in the low:
    one store and one load a candidate (compared as uint64, the packed values order as the keys do)."""
    return ((key.to(tl.uint64) << 32) | pos.to(tl.uint64)).to(tl.int64, bitcast=True)


@triton.jit
def _unpack(c):
    """(order key, position) of packed candidates (_pack)."""
    u = c.to(tl.uint64, bitcast=True)
    return (u >> 32).to(tl.uint32), (u & 0xFFFFFFFF).to(tl.int32)


@triton.jit
def _bin_params(THRESH_ROW):
    """The row's threshold (its order key), the threshold's score and the bins' shift or
    bins per unit of score (int32 bits), as _bin_of takes them."""
    t_lo = tl.load(THRESH_ROW).to(tl.uint32, bitcast=True)
    x_lo = tl.load(THRESH_ROW + 2).to(tl.float32, bitcast=True)
    w = tl.load(THRESH_ROW + 3)
    return t_lo, x_lo, w


@triton.jit
def _bin_of(x, key, t_lo, x_lo, w, NB: tl.constexpr, BRANCH: tl.constexpr):
    """The pick's bin (int32) of scores x (order keys key) at or above the row's threshold
    t_lo (_bin_params): where the threshold's score x_lo is positive, (key - t_lo) >> w;
    else equal bins in score from x_lo, w bins per unit of score (fp32 bits; 0: all in
    one). The last bin holds every key from there up. Never decreasing in x, so a higher
    bin holds only higher scores. BRANCH: one of the two rules computed, by a branch on the
    row's (the same for every key); else both, and one taken."""
    if BRANCH:
        if x_lo > 0:
            b = tl.minimum((key - t_lo) >> w.to(tl.uint32), NB - 1).to(tl.int32)
        else:
            f = (x - x_lo) * w.to(tl.float32, bitcast=True)
            b = tl.where(f < NB - 1, tl.maximum(f, 0.0), NB - 1).to(tl.int32)  # inf * 0 (NaN) to the last bin too
    else:
        by_key = x_lo > 0
        f = (x - x_lo) * tl.where(by_key, 0, w).to(tl.float32, bitcast=True)
        b_score = tl.where(f < NB - 1, tl.maximum(f, 0.0), NB - 1).to(tl.int32)
        b_key = tl.minimum((key - t_lo) >> tl.where(by_key, w, 0).to(tl.uint32), NB - 1).to(tl.int32)
        b = tl.where(by_key, b_key, b_score)
    return b


@triton.jit
def _emit(dst, key, pos, valid, t, n_gt, k, w_gt, w_eq):
    """Writes one tile's positions of keys above t (after the w_gt already written) and of
    keys equal to t while fewer than k - n_gt of them are written; returns the cursors."""
    gt = valid & (key > t)
    eq = valid & (key == t)
    c_gt = w_gt + tl.cumsum(gt.to(tl.int32), 0)
    c_eq = w_eq + tl.cumsum(eq.to(tl.int32), 0)
    tl.store(dst + c_gt - 1, pos, mask=gt)
    tl.store(dst + n_gt + c_eq - 1, pos, mask=eq & (c_eq <= k - n_gt))
    return w_gt + tl.sum(gt.to(tl.int32), 0), w_eq + tl.sum(eq.to(tl.int32), 0)


@triton.jit
def _add2(a0, b0, a1, b1):
    return a0 + a1, b0 + b1


@triton.jit
def _tile_keys(SRC, i, m, SCORES: tl.constexpr):
    """Order keys and positions of a tile of scores (SCORES: the positions are the
    indices) or of packed candidates (_pack); keys 0 where masked out, below every
    bisection probe."""
    if SCORES:
        key = _order_key(tl.load(SRC + i, mask=m, other=0.0))
        pos = i
    else:
        key, pos = _unpack(tl.load(SRC + i, mask=m, other=0))
    return tl.where(m, key, 0), pos


@triton.jit
def _pick_tiles(SRC, n, dst, k, TILE: tl.constexpr, SCORES: tl.constexpr):
    """The exact top k of n keys read from memory a tile at a time: a row of scores
    (SCORES: the positions are the indices) or packed candidates (_pack).
    Bisection over the 32 key bits, two a round and a pass over the keys each, a counting
    pass, then a writing pass. Slow: only for rows whose candidates missed the k-th largest,
    or whose k-th largest lies in the last bin or in a bin of more than PICK_TIES keys."""
    offs = tl.arange(0, TILE)
    t = tl.zeros([], tl.uint32)
    for j in range(16):
        lo = t | _bit(30 - 2 * j)
        hi = t | _bit(31 - 2 * j)
        n_lo = tl.zeros([], tl.int32)
        n_hi = tl.zeros([], tl.int32)
        n_both = tl.zeros([], tl.int32)
        for i0 in range(0, n, TILE):
            i = i0 + offs
            key, _ = _tile_keys(SRC, i, i < n, SCORES)
            a, b, c = _count3(key, lo, hi, lo | hi)
            n_lo, n_hi, n_both = n_lo + a, n_hi + b, n_both + c
        t = _narrow(t, k, lo, hi, lo | hi, n_lo, n_hi, n_both)
    n_gt = tl.zeros([], tl.int32)
    for i0 in range(0, n, TILE):
        i = i0 + offs
        key, _ = _tile_keys(SRC, i, i < n, SCORES)
        n_gt += tl.sum((key > t).to(tl.int32), 0)
    w_gt = tl.zeros([], tl.int32)
    w_eq = tl.zeros([], tl.int32)
    for i0 in range(0, n, TILE):
        i = i0 + offs
        m = i < n
        key, pos = _tile_keys(SRC, i, m, SCORES)
        w_gt, w_eq = _emit(dst, key, pos, m, t, n_gt, k, w_gt, w_eq)


@triton.jit
def _count_max_min(a0, b0, c0, a1, b1, c1):
    return a0 + a1, tl.maximum(b0, b1), tl.minimum(c0, c1)


@triton.jit
def _bin_of_kth(h, c, kk, NB: tl.constexpr):
    """Of a histogram h [NB] of c keys: the bin holding the kk-th largest key (the highest
    bin with at least kk keys in it and above), and the keys in it."""
    n_ge = c - tl.cumsum(h, 0) + h  # keys in this bin and above
    ge = n_ge >= kk
    if TUPLE_REDUCE:
        n_bins, n_above, n_ge_kth = tl.reduce((ge.to(tl.int32), tl.where(ge, 0, n_ge), tl.where(ge, n_ge, c)), 0,
                                              _count_max_min)
    else:
        n_bins = tl.sum(ge.to(tl.int32), 0)
        n_above = tl.max(tl.where(ge, 0, n_ge), 0)
        n_ge_kth = tl.min(tl.where(ge, n_ge, c), 0)
    return n_bins - 1, n_ge_kth - n_above


@triton.jit
def _pick_by_bins(CAND, key0, pos0, TIE, t_lo, x_lo, w, dst, c, kk, b_kth, n_tie, NB: tl.constexpr,
                  TILE: tl.constexpr, TIES: tl.constexpr, BIN_BRANCH: tl.constexpr, SCALAR_LOADS: tl.constexpr):
    """The kk largest of c candidates, given the bin b_kth that holds the kk-th largest and
    its n_tie <= TIES keys: the positions of the keys in the bins above it are written, a
    tile of candidates at a time (one where TILE holds them all), and its keys and positions
    gathered in TIE; then each of those is ranked against the others at once (ties by their
    order in TIE) and the highest as many as are still wanted are written after the others.
    key0, pos0: the first tile of candidates, and t_lo, x_lo, w: the row's bins (_bin_params),
    loaded by the caller."""
    offs = tl.arange(0, TILE)
    w_gt = tl.zeros([], tl.int32)
    w_eq = tl.zeros([], tl.int32)
    for i0 in range(0, c, TILE):
        i = i0 + offs
        m = i < c
        if i0 == 0:  # loaded already
            key, pos = key0, pos0
        else:
            if SCALAR_LOADS:
                i = tl.max_contiguous(i, 1)
            key, pos = _unpack(tl.load(CAND + i, mask=m, other=0))
        b = _bin_of(_key_value(key), key, t_lo, x_lo, w, NB, BIN_BRANCH)
        gt = m & (b > b_kth)
        eq = m & (b == b_kth)
        if TUPLE_REDUCE:
            c_gt, c_eq = tl.associative_scan((gt.to(tl.int32), eq.to(tl.int32)), 0, _add2)
        else:
            c_gt, c_eq = tl.cumsum(gt.to(tl.int32), 0), tl.cumsum(eq.to(tl.int32), 0)
        tl.store(dst + w_gt + c_gt - 1, pos, mask=gt & (w_gt + c_gt <= kk))  # within the row whatever the counts
        eq = eq & (w_eq + c_eq <= TIES)  # all of them, as the histogram counted them
        tl.store(TIE + w_eq + c_eq - 1, key.to(tl.int32, bitcast=True), mask=eq)
        tl.store(TIE + TIES + w_eq + c_eq - 1, pos, mask=eq)
        w_gt += tl.sum(gt.to(tl.int32), 0)
        w_eq += tl.sum(eq.to(tl.int32), 0)
    tl.debug_barrier()  # the bin's keys, written by every thread, read by every thread
    ri = tl.arange(0, TIES)
    ki = tl.load(TIE + ri, mask=ri < n_tie, other=0).to(tl.uint32, bitcast=True)
    rank = tl.zeros([TIES], tl.int32)
    for j0 in tl.static_range(0, TIES, 32):
        rj = j0 + tl.arange(0, 32)
        kj = tl.load(TIE + rj, mask=rj < n_tie, other=0).to(tl.uint32, bitcast=True)
        before = (kj[None, :] > ki[:, None]) | ((kj[None, :] == ki[:, None]) & (rj[None, :] < ri[:, None]))
        rank += tl.sum((before & (rj[None, :] < n_tie)).to(tl.int32), 1)
    pos = tl.load(TIE + TIES + ri, mask=ri < n_tie, other=0)
    tl.store(dst + w_gt + rank, pos, mask=(ri < n_tie) & (rank < kk - w_gt))


@triton.jit
def _pick_kernel(SCORES, CAND, COUNT, SURE, THRESH, HIST, TIE, IDX, S, k, cap, CAPB: tl.constexpr,
                 BLOCK: tl.constexpr,  # candidates or scores per tile where read from memory
                 ONESHOT: tl.constexpr, NB: tl.constexpr, TIES: tl.constexpr, BIN_BRANCH: tl.constexpr,
                 SCALAR_LOADS: tl.constexpr, PDL: tl.constexpr):
    """Grid (rows,). The filter wrote the row's n_sure keys above the sure threshold to its
    output; the rest, kk = k - n_sure, are the kk largest candidates when those number at
    least kk (all keys at or above the threshold and below the sure one). The filter's
    histogram of them names the bin of the kk-th largest; where that is not the last bin
    and holds at most TIES keys, the keys above it are written and its keys ranked
    (_pick_by_bins: no bisection), a tile of CAPB (ONESHOT) or BLOCK candidates at a time;
    otherwise the kk-th largest is found by bisection from memory, a tile at a time. Written
    after the sure ones. A sample that missed (more than k sure keys, fewer than kk
    candidates), or more candidates than their room (cap), and the whole row is searched
    from memory instead: slow, never wrong. Resets the row's counters and histogram for
    the next call."""
    grid_wait(PDL)
    row = tl.program_id(0).to(tl.int64)
    TILE: tl.constexpr = CAPB if ONESHOT else BLOCK
    i = tl.arange(0, TILE)  # the first tile of candidates loaded with the counts (those past the count unused)
    if SCALAR_LOADS:
        i = tl.max_contiguous(i, 1)
    key0, pos0 = _unpack(tl.load(CAND + row * cap + i, mask=i < cap, other=0))
    c = tl.load(COUNT + row)
    n_sure = tl.load(SURE + row)
    bins = tl.arange(0, NB)
    h = tl.load(HIST + row * NB + bins)
    t_lo, x_lo, w = _bin_params(THRESH + 4 * row)  # the bins' origin and scale, with the counts
    launch_next(PDL)  # before the pick's chain of dependent steps: the attend's programs become resident during it
    tl.debug_barrier()  # every warp has read the counts before one thread clears them
    tl.store(COUNT + row, 0)
    tl.store(SURE + row, 0)
    tl.store(HIST + row * NB + bins, tl.zeros([NB], tl.int32))
    kk = k - n_sure
    dst = IDX + row * k + n_sure
    if (n_sure <= k) & (c >= kk) & (c <= cap):
        if kk > 0:
            b_kth, n_tie = _bin_of_kth(h, c, kk, NB)
            if (b_kth < NB - 1) & (n_tie <= TIES):
                _pick_by_bins(CAND + row * cap, key0, pos0, TIE + row * 2 * TIES, t_lo, x_lo, w,
                              dst, c, kk, b_kth, n_tie, NB, TILE, TIES, BIN_BRANCH, SCALAR_LOADS)
            else:
                _pick_tiles(CAND + row * cap, c, dst, kk, BLOCK, False)
    else:
        _pick_tiles(SCORES + row * S, S, IDX + row * k, k, BLOCK, True)


@triton.jit
def _attend_kernel(
    Q, QM, INV_TAU, K, V, IDX, M_STAT, L_STAT, O_PART, M_PART, L_PART, A_PART, COUNT, VBAR, OUT,
    k, chunk, n_splits, n_chunks, qk_scale,
    sQb, sQh, sKb, sKh, sKs, sVb, sVh, sVs, sMb, sMh, sYb, sYh,
    HKV,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
    BLOCK_K: tl.constexpr,
    NCP: tl.constexpr,
    SP: tl.constexpr,  # splits rounded up to a power of two (the fused merge)
    MIX: tl.constexpr,  # compute alpha (step 6) for the v_bar mixing
    FUSED: tl.constexpr,  # the last split program of each KV head merges (fused_merge)
    UPCAST: tl.constexpr,
    PDL: tl.constexpr,
):
    grid_wait(PDL)
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    b = pid // HKV
    h = pid % HKV
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, DP)
    offs_j = tl.arange(0, BLOCK_K)
    gm = offs_g < G
    dm = offs_d < D
    hq = b * HKV * G + h * G + offs_g  # flat query-head rows
    qmask = gm[:, None] & dm[None, :]
    q = tl.load(Q + b * sQb + (h * G + offs_g)[:, None] * sQh + offs_d[None, :], mask=qmask, other=0.0)
    if MIX:
        qm = tl.load(QM + hq[:, None] * D + offs_d[None, :], mask=qmask, other=0.0)
        a_scale = tl.load(INV_TAU + hq, mask=gm, other=0.0) * 1.4426950408889634
        offs_c = tl.arange(0, NCP)
        cm = gm[:, None] & (offs_c[None, :] < n_chunks)
        mc = tl.load(M_STAT + hq[:, None] * n_chunks + offs_c[None, :], mask=cm, other=-float("inf"))
        lc = tl.load(L_STAT + hq[:, None] * n_chunks + offs_c[None, :], mask=cm, other=0.0)
        m_tot = tl.where(gm, tl.max(mc, 1), 0.0)
        l_tot = tl.sum(tl.where(cm, lc * tl.exp2(mc - m_tot[:, None]), 0.0), 1)
        inv_l = tl.where(gm, 1.0 / tl.where(gm, l_tot, 1.0), 0.0)
        a_acc = tl.zeros([GP], tl.float32)
    k_base = K + b * sKb + h * sKh
    v_base = V + b * sVb + h * sVh
    idx_base = IDX + pid * k
    start = split * chunk
    end = tl.minimum(start + chunk, k)
    m_i = tl.full([GP], -float("inf"), tl.float32)
    l_i = tl.zeros([GP], tl.float32)
    acc = tl.zeros([GP, DP], tl.float32)
    for j0 in range(start, end, BLOCK_K):
        j = j0 + offs_j
        jm = j < end
        pos = tl.load(idx_base + j, mask=jm, other=0).to(tl.int64)
        kv_mask = jm[:, None] & dm[None, :]
        kk = tl.load(k_base + pos[:, None] * sKs + offs_d[None, :], mask=kv_mask, other=0.0)  # [BLOCK_K, DP]
        s = dot(q, tl.trans(kk), UPCAST) * qk_scale  # step 7, log2 domain
        s = tl.where(jm[None, :], s, -float("inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        corr = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * corr + tl.sum(p, 1)
        vv = tl.load(v_base + pos[:, None] * sVs + offs_d[None, :], mask=kv_mask, other=0.0)
        acc = acc * corr[:, None] + dot(p.to(vv.dtype), vv, UPCAST)
        m_i = m_new
        if MIX:  # step 6: alpha = sum of s_hat over the chosen rows, from the same K rows
            za = dot(qm, tl.trans(kk), UPCAST) * a_scale[:, None]
            s_hat = tl.exp2(za - m_tot[:, None]) * inv_l[:, None]
            a_acc += tl.sum(tl.where(jm[None, :], s_hat, 0.0), 1)
    launch_next(PDL)
    row = hq * n_splits + split
    tl.store(M_PART + row, m_i, mask=gm)
    tl.store(L_PART + row, l_i, mask=gm)
    tl.store(O_PART + row[:, None] * D + offs_d[None, :], acc, mask=qmask)
    if MIX:
        tl.store(A_PART + row, a_acc, mask=gm)
    if FUSED:
        last_split_merges(COUNT, O_PART, M_PART, L_PART, A_PART, VBAR, OUT, b, h, n_splits, sMb, sMh, sYb, sYh, HKV,
                          G, D, DP, SP, MIX)


class SparqState:
    """Buffers of one SparQ step for a (q shape, cache, S, r, k): reusable, CUDA-graph safe."""

    def __init__(self, q, cache: KVCache, r: int, k: int, l: int = 0):
        B, Hq, d = q.shape
        Hkv = cache.n_kv_heads
        S = cache.length
        if not 1 <= r <= d:
            raise ValueError(f"r must be in [1, d_head={d}], got {r}")
        if not 1 <= k <= S:
            raise ValueError(f"k must be in [1, S={S}], got {k}")
        if not 0 <= l <= k:
            raise ValueError(f"l must be in [0, k={k}], got {l}")
        self.S, self.r, self.k, self.l = S, r, k, l
        self.G = Hq // Hkv
        dev = q.device
        rows = B * Hkv
        self.block_s = score_block(self.G, r)
        self.fma = score_fma(self.G, r)
        self.score_filter = score_filter(self.G)
        self.topr_kernel = topr_kernel(self.G, rows) and not self.score_filter  # (the sample kernel's then)
        self.n_chunks = n_splits_for(rows, S, self.block_s, waves=score_waves(self.G, rows))
        self.chunk = chunk_for(S, self.n_chunks, self.block_s)
        self.block_k = BLOCK_K
        self.n_splits = n_splits_for(rows, k, self.block_k, waves=attend_waves(self.G, rows),
                                     max_blocks=attend_max_blocks(self.G, rows))
        self.chunk_k = chunk_for(k, self.n_splits, self.block_k)
        self.attend_stages = attend_stages(self.G, rows, d, triton.cdiv(self.chunk_k, self.block_k))
        f32 = torch.float32
        self.scores = torch.empty((B, Hkv, S), dtype=f32, device=dev)
        self.qm = torch.empty((B, Hq, d), dtype=q.dtype, device=dev)
        self.inv_tau = torch.empty((B, Hq), dtype=f32, device=dev)
        self.rp = max(16, triton.next_power_of_2(r))  # top-r slots (a tl.dot needs 16 rows at least)
        self.i1 = torch.empty((rows, self.rp), dtype=torch.int32, device=dev)
        self.m_stat = torch.empty((B, Hq, self.n_chunks), dtype=f32, device=dev)
        self.l_stat = torch.empty((B, Hq, self.n_chunks), dtype=f32, device=dev)
        self.idx = torch.empty((B, Hkv, k), dtype=torch.int32, device=dev)
        self.sel = FilterWorkspace(rows, S, k, dev)
        self.o_part = torch.empty((B, Hq, self.n_splits, d), dtype=f32, device=dev)
        self.m_part = torch.empty((B, Hq, self.n_splits), dtype=f32, device=dev)
        self.l_part = torch.empty((B, Hq, self.n_splits), dtype=f32, device=dev)
        self.a_part = torch.empty((B, Hq, self.n_splits), dtype=f32, device=dev)
        self.merge_count = torch.zeros(rows, dtype=torch.int32, device=dev)  # reset by the merging program
        self.out = torch.empty_like(q)

    def matches(self, cache, r, k, l):
        return (self.S, self.r, self.k, self.l) == (cache.length, r, k, l)


def _meta(q, cache):
    Hkv = cache.n_kv_heads
    G = q.shape[1] // Hkv
    d = cache.d_head
    return dict(G=G, GP=max(16, triton.next_power_of_2(G)), D=d, DP=triton.next_power_of_2(d), UPCAST=INTERPRET)


def kt_load_end(KT, S: int) -> int:
    """Where the score kernel's loads of K^T rows stop: S rounded up to 16 positions when
    every row has room for them (KVCache pads its rows), else S. A multiple of 16 lets
    the compiler use 16-byte loads; the positions past S are read, never scored."""
    end = -(-S // 16) * 16
    return end if KT.stride(2) % 16 == 0 and KT.stride(2) >= end and KT.stride(3) == 1 else S


def sparq_score(q, cache: KVCache, state: SparqState, num_warps=None):
    """Steps 1-5's ranking score: fills state.scores [B, H_kv, S] (fp32) and statistics."""
    check_q(q, cache)
    KT = cache.KT
    Hkv = cache.n_kv_heads
    meta = _meta(q, cache)
    grid = (q.shape[0] * Hkv, state.n_chunks)
    args = (
        q, KT, state.scores, state.sel.sample, state.qm, state.inv_tau, state.i1, state.m_stat, state.l_stat,
        state.S, kt_load_end(KT, state.S), state.chunk, state.n_chunks, state.l, state.r,
        state.sel.sample_stride, state.sel.n_sample,
        q.stride(0), q.stride(1), KT.stride(0), KT.stride(1), KT.stride(2), 0, 0, Hkv,
    )
    sel = state.sel
    row_meta = {k: v for k, v in meta.items() if k != "UPCAST"}  # of the one-program-a-row kernels
    if state.score_filter:
        ns = triton.next_power_of_2(sel.n_sample)
        run = sample_kernel_run(sel.n_sample)
        _sample_kernel[(q.shape[0] * Hkv,)](
            q, KT, sel.sample, sel.thresh, state.qm, state.inv_tau, state.i1, state.S, state.l, state.r,
            run * sel.sample_stride, sel.n_sample, sel.rank, sel.rank_sure,
            q.stride(0), q.stride(1), KT.stride(0), KT.stride(1), KT.stride(2), Hkv,
            RP=state.rp, RUN=run, TILE=max(run, min(ns, SAMPLE_TILE)), NS=ns,
            NB_LOG2=sel.bins.bit_length() - 1, JOINT=JOINT_THRESHOLDS,
            num_warps=_warps(ns, THRESH_KEYS_PER_THREAD, max(THRESH_MIN_WARPS, SAMPLE_MIN_WARPS), 16),
            **row_meta, **pdl_args())
    if state.topr_kernel:
        _topr_kernel[(q.shape[0] * Hkv,)](q, state.i1, state.qm, state.inv_tau, state.r, q.stride(0), q.stride(1), Hkv,
                                          RP=state.rp, num_warps=TOPR_WARPS, **row_meta, **pdl_args())
    # the filter's workspace (read only where the score filters: no other lengths to specialise on)
    args += (sel.thresh, sel.cand, sel.count, sel.n_sure, state.idx, sel.hist,
             *((state.k, sel.cap) if state.score_filter else (0, 0)))
    common = dict(RP=state.rp, BLOCK_S=state.block_s, NCP=pow2_bucket(state.n_chunks),
                  TOPR_GIVEN=state.topr_kernel or state.score_filter,
                  num_warps=num_warps or SCORE_WARPS, **meta, **pdl_args())
    if state.G == 1:
        _score_kernel[grid](*args, PASS=0, FMA=state.fma, REVERSED=False, KT_EVICT=SCORE_ONE_PASS_EVICT,
                            **(dict(FILTER=True, HAS_SURE=sel.rank_sure > 0, NB=sel.bins, BIN_BRANCH=BIN_BRANCH,
                                    ASM_WRITES=asm_writes(),
                                    **max_regs(SCORE_FILTER_MAXNREG)) if state.score_filter else {}), **common)
    else:
        _score_kernel[grid](*args, PASS=1, FMA=False, REVERSED=False, KT_EVICT=SCORE_FIRST_PASS_EVICT, **common)
        _score_kernel[grid](*args, PASS=2, FMA=False, REVERSED=SCORE_SECOND_PASS_REVERSED,
                            KT_EVICT=SCORE_SECOND_PASS_EVICT, **common)
    return state.scores


SAMPLE_MIN, SAMPLE_MAX = plan.SAMPLE_MIN, plan.SAMPLE_MAX
SAMPLE_STRIDE = plan.SAMPLE_STRIDE
SAMPLE_SIGMAS = plan.SAMPLE_SIGMAS  # the threshold rank's, the sample read in runs (and the room's)
STRIDED_SIGMAS = plan.STRIDED_SIGMAS  # ... the sample one key every stride (the score kernel's)
# the pick's slots after a strided sample sized for its ranks' candidates (False: for the
# runs', at SAMPLE_SIGMAS; the cost model counts True)
STRIDED_SLOTS = True
FILTER_BLOCK = plan.FILTER_BLOCK  # keys per tile of the filter pass
FILTER_WARPS = 1  # (select_plan.FILTER_BLOCK: the evidence)
# a cap on the filter's registers per thread (None: the compiler's choice). H200, triton 3.6
# (reports/kernels/tune_fixed_2fa19be.json): 88 registers (99 with the sure threshold), capped
# at 64 / 72 / 80 it spilled 14 / 2 / 0 bytes and no shape moved by more than 1 %: more warps
# resident do not speed it, its instructions bound it (ncu_filter_2fa19be.txt; experiments/NOTES.md)
FILTER_MAXNREG = None
# (the evidence for the pick's warps below was measured on the bisection pick the pick by bins
# replaced; not measured again)
PICK_KEYS_PER_THREAD = 32  # candidates per thread of the pick kernel (its warps follow; H100: 0.9x the
# time of 16 at 4k-16k candidates, reports/kernels/tune_sparq_warps_4e5e13f.json)
# ... but this many where the rows are at most one per SM and the pick then keeps to
# PICK_ONESHOT_MAX_WARPS warps (H100, 4096 slots: B=1 S=32k select 24.8 -> 23.1 us, GQA B=16
# 37.7 -> 36.1; at 512 rows 118.5 -> 123.5, and at 32 warps for 16384 slots 72.7 -> 78.2;
# reports/kernels/tune_sparq_4131807.json)
PICK_KEYS_PER_THREAD_FEW = 16
PICK_MIN_WARPS = 4
PICK_MAXNREG = None  # a cap on the pick's registers a thread (None: the compiler's; tuning)
THRESH_KEYS_PER_THREAD = 16  # sampled keys per thread of the threshold kernel
# where the sure threshold is used, its search and the lower threshold's share each round's
# block reduction (8 reductions of 16-bit keys, not 16 one search after the other). H200
# (reports/kernels/tune_fixed_69946ca.json), selection alone, us: 32 x 32k k=2048 17.7 -> 16.5,
# 32 x 128k 60.2 -> 58.7, 132 x 32k 35.2 -> 33.9; without a sure threshold (512 rows and more)
# the same
JOINT_THRESHOLDS = True
THRESH_MIN_WARPS = 4
# ... but one warp (no barrier in its search's rounds) where the sample has at most this
# many keys. H200 (reports/kernels/tune_fixed_260b73e.json, us, 4 warps -> 1): selection alone
# 512 x 4k 29.3 -> 26.6; B=64 S=4k select in the step 68.9 -> 64.3 (step 249.0 -> 242.8); at
# 512 keys (B=1 S=8k, 32 x 8k) within 0.1; one warp at 1024 and 2048 keys slower (2048 x 16k
# 151.3 -> 156.3, 132 x 32k 29.3 -> 30.9)
THRESH_ONE_WARP_MAX_SAMPLE = 256
# the thresholds found by every program of the filter instead of a launch of their own, where
# the rows are at most THRESHOLD_IN_FILTER_MAX_ROWS (select_plan, so the cost model counts the
# launches alike): the same search, redone by each of a row's filter programs, one launch and
# its wait fewer. None: that rule; True / False: always / never (tests, tuning). H200, up to 32 /
# 128 / 512 rows against none (reports/kernels/tune_fixed_37152f3.json, us): faster in the step
# at B=1 S=8k (31.6 -> 30.6; a one-warp sample) and GQA B=1 S=32k (42.0 -> 40.5; a program an SM),
# and alone at 512 x 4k (31.1 -> 26.5), but slower alone at 32 x 8k (11.6 -> 13.7) and 32 x 32k
# (16.5 -> 28.8), and in the step at B=1 S=32k (52.6 -> 57.3), 128k (150.1 -> 235.0), GQA B=4
# (66.8 -> 71.7): each row's filter programs redo a search of cross-warp reductions that then
# share the SMs (a cost the cost model does not count: it counts the launch fewer and the
# tiles). So off (select_plan.THRESHOLD_IN_FILTER_MAX_ROWS = 0)
THRESHOLD_IN_FILTER = None
PICK_TILE = 1024  # candidates (or, in the fallback, scores) per tile where the pick reads them from memory
# the pick reads its candidates in one tile of all its slots where it runs at most
# PICK_ONESHOT_MAX_WARPS warps (None: never) and the rows are at most
# PICK_ONESHOT_ROWS_PER_SM per SM (more rows want more programs per SM than those registers
# allow); else PICK_TILE at a time (measured for the bisection pick this replaced, H100,
# reports/kernels/tune_sparq_d35f6ba.json: 32 rows x 32k, k=2048 35.1 -> 33.1 us; but 512
# rows x 4096 candidates 138.7 vs 153.6)
PICK_ONESHOT_MAX_WARPS = 8
PICK_ONESHOT_ROWS_PER_SM = 2
# the selection's kernels of one program per row (of NO_PDL_ROW_KERNELS: "threshold",
# "pick") launched without PDL where the rows per SM lie in NO_PDL_ROWS_PER_SM (above the
# first, at most the second). With PDL their programs start during the last wave of the
# kernel before, placed where slots free first, several to an SM (H200 at 3f3f7bf, select
# alone: 132 rows 45.2 us against 40.6 without PDL, 512 rows 31.1 against 27.5; 32 and 2048
# rows faster with it; experiments/NOTES.md). Empty (PDL at every row count) until timed.
NO_PDL_ROW_KERNELS: tuple = ()
NO_PDL_ROWS_PER_SM = (0.5, 4.0)
# the pick's slots (its first tile where it reads them in one): the expected count of
# candidates and this many standard deviations of it (a row with more reads the rest a
# tile at a time), for the thresholds' ranks of the sample (pick_slots), within the cap
PICK_SLOT_SIGMAS = plan.PICK_SLOT_SIGMAS
# the sure threshold (select_plan): None where it shrinks the pick's slots; True / False:
# always / never (tests, tuning)
SURE_THRESHOLD = None
# the pick by bins (_pick_by_bins): the filter counts each row's candidates in a histogram
# of select_plan.pick_bins(S) bins, and the pick ranks the at most PICK_TIES keys of the bin
# of the k-th largest against each other. H200 (reports/kernels/tune_fixed_043170c.json,
# against the k-th largest by bisection over the candidates in registers, since removed):
# select in the step B=1 S=32k 22.1 -> 19.2 us, B=64 S=4k 112.1 -> 85.0, B=16 S=32k 117.2 ->
# 102.2; selection alone 2048 x 16k, k=1024, 288.7 -> 237.0; ties 64 instead of 128 faster
# by 0.1-5 us more
PICK_TIES = 64
# the filter's and the pick's tiles loaded one element a thread (above _filter_kernel). H200
# (reports/kernels/tune_fixed_b95876e.json), the pick's: selection alone 132 x 32k, k=2048
# 43.5 -> 36.0 us, 32 x 32k 18.1 -> 17.1, 8 x 32k 15.9 -> 14.8, 32 x 128k 63.6 -> 60.5, 2048 x 16k
# 188.1 -> 188.6. The filter's lost where the rows are many (72 -> 96 registers): 2048 x 16k
# 177.0 -> 188.6, B=16 S=32k select 79.1 -> 81.9; at few rows within 0.3 us. So the pick only.
FILTER_SCALAR_LOADS = False
# the filter's candidate stores and histogram counts by inline PTX, in the layout its scores
# were loaded in (_append_and_count; compiled only: the interpreter runs tl.store and
# tl.atomic_add, the same writes)
FILTER_ASM_WRITES = True


def asm_writes() -> bool:
    """Whether the filter (kernel, or the score's) writes by inline PTX: FILTER_ASM_WRITES,
    compiled only."""
    return FILTER_ASM_WRITES and not INTERPRET

PICK_SCALAR_LOADS = True
# the filter's and the pick's bins (_bin_of) by a branch on the row's rule, one computed
# (True), or both computed and one taken (False; the rule before dd624de)
BIN_BRANCH = True


def threshold_in_filter(rows: int) -> bool:
    """Whether the filter programs find their rows' thresholds themselves: THRESHOLD_IN_FILTER
    (None: select_plan's rule, at most its THRESHOLD_IN_FILTER_MAX_ROWS rows, the cost
    model's too; True / False: always / never)."""
    if THRESHOLD_IN_FILTER is not None:
        return THRESHOLD_IN_FILTER
    return bool(plan.threshold_in_filter(rows))


def pick_bins(S: int) -> int:
    return int(plan.pick_bins(S))


def sample_size(S: int) -> int:
    return int(plan.sample_size(S, SAMPLE_MIN, SAMPLE_MAX, SAMPLE_STRIDE))


def sample_rank(S: int, k: int, n: int, sigmas: float | None = None) -> int:
    """The threshold's rank in a sample of n keys, at `sigmas` (None: SAMPLE_SIGMAS)."""
    return int(plan.sample_rank(S, k, n, SAMPLE_SIGMAS if sigmas is None else sigmas))


def sure_rank(S: int, k: int, n: int, sigmas: float | None = None) -> int:
    """The sure threshold's rank in a sample of n keys, at `sigmas` (None: SAMPLE_SIGMAS)."""
    return int(plan.sure_rank(S, k, n, SAMPLE_SIGMAS if sigmas is None else sigmas))


def uses_sure(S: int, k: int, n: int, rows: int) -> bool:
    return bool(plan.uses_sure(S, k, n, rows, SAMPLE_SIGMAS)) if SURE_THRESHOLD is None else SURE_THRESHOLD


def candidate_cap(S: int, k: int, n: int, sure: bool = False) -> int:
    """Room for the candidates: their expected count and SAMPLE_SIGMAS of its spread, a
    power of two, at most S's and, unless the sure threshold holds some back, at least k's."""
    return _pow2_room(S, k, n, SAMPLE_SIGMAS, sure)


def pick_slots(S: int, k: int, n: int, sure: bool = False, strided: bool = False) -> int:
    """Candidates in the pick's first tile where it reads them in one: as candidate_cap,
    PICK_SLOT_SIGMAS of spread, for the thresholds of a strided sample's ranks (strided, where
    STRIDED_SLOTS) or the runs'."""
    sig = STRIDED_SIGMAS if strided and STRIDED_SLOTS else SAMPLE_SIGMAS
    return _pow2_room(S, k, n, PICK_SLOT_SIGMAS, sure, sig)


def _pow2_room(S: int, k: int, n: int, sigmas: float, sure: bool, rank_sigmas: float = SAMPLE_SIGMAS) -> int:
    return int(plan.pick_room(S, k, n, sure, sigmas, rank_sigmas))


class FilterWorkspace:
    """Scratch of the selection for `rows` rows of S scores and a given k: each row's two
    thresholds and the origin and scale of its bins, its candidates (order keys and positions), its
    counters (candidates and sure keys) and histogram, zeroed here and reset by the pick
    kernel (graph safe: no memset per call), and room for the keys of the k-th's bin; and
    whether the filter finds the thresholds itself (threshold_in_filter: its programs then in
    filter_warps warps, on tiles of `block` scores, FILTER_BLOCK a warp)."""

    def __init__(self, rows: int, S: int, k: int, device, n_sample: int | None = None):
        self.S, self.k = S, k
        self.n_sample = min(S, n_sample or sample_size(S))
        self.sample_stride = S // self.n_sample  # one key in sample_stride
        # read from the scores (topk_indices), the sample is runs of sample_run consecutive
        # positions, one every sample_run * sample_stride (sample_positions); the score
        # kernel writes the step's at every sample_stride-th position
        self.sample_run = int(plan.sample_run(S, self.n_sample))
        self.rank = sample_rank(S, k, self.n_sample)
        self.sure = uses_sure(S, k, self.n_sample, rows)
        self.rank_sure = sure_rank(S, k, self.n_sample) if self.sure else 0
        # ... where the sample is the score kernel's, one key every stride: STRIDED_SIGMAS
        self.rank_strided = sample_rank(S, k, self.n_sample, STRIDED_SIGMAS)
        self.rank_sure_strided = sure_rank(S, k, self.n_sample, STRIDED_SIGMAS) if self.sure else 0
        self.cap = candidate_cap(S, k, self.n_sample, self.sure)
        self.slots = min(self.cap, pick_slots(S, k, self.n_sample, self.sure))
        self.slots_strided = min(self.cap, pick_slots(S, k, self.n_sample, self.sure, strided=True))
        # the thresholds found by every filter program where the rows are few (no threshold
        # launch): its programs then hold the sample too, select_plan.THRESHOLD_KEYS_PER_THREAD
        # keys a thread, on tiles of FILTER_BLOCK scores a warp (as the cost model counts them)
        self.threshold_in_filter = threshold_in_filter(rows)
        warps = int(plan.threshold_in_filter_warps(self.n_sample)) if self.threshold_in_filter else 1
        self.filter_warps = max(FILTER_WARPS, warps)
        self.block = FILTER_BLOCK * warps
        self.thresh = torch.empty((rows, 4), dtype=torch.int32, device=device)  # thresholds, bins' origin, scale
        self.bins = pick_bins(S)
        self.hist = torch.zeros((rows, self.bins), dtype=torch.int32, device=device)  # reset by the pick
        self.ties = PICK_TIES
        self.tie = torch.empty((rows, 2 * self.ties), dtype=torch.int32, device=device)  # keys, then positions
        self.n_sure = torch.zeros(rows, dtype=torch.int32, device=device)
        # the candidates, each an int64 of its order key (high word) and position (low word)
        self.cand = torch.empty((rows, self.cap), dtype=torch.int64, device=device)
        self.count = torch.zeros(rows, dtype=torch.int32, device=device)
        self.sample = torch.empty((rows, self.n_sample), dtype=torch.float32, device=device)  # written by sparq_score

    @property
    def ckey(self):
        """The candidates' order keys (int32 bits), a view of their high words."""
        return self.cand.view(torch.int32)[:, 1::2]

    @property
    def cpos(self):
        """The candidates' positions, a view of their low words."""
        return self.cand.view(torch.int32)[:, 0::2]

    def ranks(self, strided: bool) -> tuple[int, int]:
        """The lower and sure thresholds' ranks in the sample (0: no sure threshold): at
        STRIDED_SIGMAS for the score kernel's, one key every stride (strided), else at
        SAMPLE_SIGMAS (runs read from the scores)."""
        return (self.rank_strided, self.rank_sure_strided) if strided else (self.rank, self.rank_sure)

    def pick_slots(self, strided: bool) -> int:
        """The pick's slots after the thresholds of ranks(strided)."""
        return self.slots_strided if strided else self.slots

    def strided_positions(self) -> torch.Tensor:
        """The positions of the step's sample, one key every stride, as sparq_score writes it
        (int64)."""
        return torch.arange(self.n_sample, device=self.thresh.device) * self.sample_stride

    def sample_positions(self) -> torch.Tensor:
        """The positions of the sample the threshold kernel reads from the scores (int64)."""
        i = torch.arange(self.n_sample, device=self.thresh.device)
        return (i // self.sample_run) * self.sample_run * self.sample_stride + i % self.sample_run

    def reset(self):
        """Counters and histogram as the pick leaves them, after a filter pass run alone."""
        for t in (self.count, self.n_sure, self.hist):
            t.zero_()


def _warps(n: int, per_thread: int, lo: int, hi: int) -> int:
    """Warps for a program holding n keys at per_thread keys per thread, within [lo, hi]."""
    return max(lo, min(hi, n // (32 * per_thread)))


def threshold_warps(ns: int) -> int:
    """Warps of the threshold kernel's programs for a sample of ns keys (a power of two):
    THRESH_KEYS_PER_THREAD keys a thread, at least THRESH_MIN_WARPS, one up to
    THRESH_ONE_WARP_MAX_SAMPLE keys."""
    return 1 if ns <= THRESH_ONE_WARP_MAX_SAMPLE else _warps(ns, THRESH_KEYS_PER_THREAD, THRESH_MIN_WARPS, 16)


def pick_warps(slots: int, rows: int) -> int:
    """Warps of the pick's programs: PICK_KEYS_PER_THREAD candidate slots per thread, or
    PICK_KEYS_PER_THREAD_FEW where the rows are at most one per SM and the warps stay within
    the one-scan limit (more threads per row where the SMs have room)."""
    warps = _warps(slots, PICK_KEYS_PER_THREAD, PICK_MIN_WARPS, 32)
    few = _warps(slots, PICK_KEYS_PER_THREAD_FEW, PICK_MIN_WARPS, 32)
    return few if rows <= num_sms() and _one_scan_warps(few) else warps


def row_kernel_pdl(kernel: str, rows: int) -> dict:
    """pdl_args for the selection's threshold or pick kernel over `rows` rows."""
    lo, hi = NO_PDL_ROWS_PER_SM
    return pdl_args(enabled=not (kernel in NO_PDL_ROW_KERNELS and lo * num_sms() < rows <= hi * num_sms()))


def max_regs(n: int | None) -> dict:
    """The launch option capping a kernel's registers per thread at n (none where n is None)."""
    return {} if n is None else {"maxnreg": int(n)}


def _one_scan_warps(warps: int) -> bool:
    """At most PICK_ONESHOT_MAX_WARPS (None: never): few enough to read the slots in one tile."""
    return PICK_ONESHOT_MAX_WARPS is not None and warps <= PICK_ONESHOT_MAX_WARPS


def filter_candidates(scores, ws: FilterWorkspace, sampled=False, out=None, reverse=False, strided=None):
    """The threshold and filter passes: ws.count[row] = keys at or above the row's threshold
    and below its sure threshold, ws.n_sure[row] = keys at or above the sure threshold (the
    first k of their positions written to out [rows, k]). sampled: ws.sample already holds
    each row's sample (sparq_score wrote it). reverse: the filter's tiles last first.
    strided: whether the sample is one key every stride, its ranks then at STRIDED_SIGMAS
    (ws.ranks); None: where sampled (sparq_score's is)."""
    rows = ws.count.numel()
    if out is None:
        out = torch.empty((rows, ws.k), dtype=torch.int32, device=scores.device)
    ns = triton.next_power_of_2(ws.n_sample)
    src, row_stride, stride = (ws.sample, ws.n_sample, 1) if sampled else (scores, ws.S, ws.sample_stride)
    rank, rank_sure = ws.ranks(sampled if strided is None else strided)
    sample = dict(NS=ns, NB_LOG2=ws.bins.bit_length() - 1, JOINT=JOINT_THRESHOLDS, RUN=1 if sampled else ws.sample_run)
    if not ws.threshold_in_filter:
        _threshold_kernel[(rows,)](src, ws.thresh, row_stride, stride, ws.n_sample, rank, rank_sure, **sample,
                                   num_warps=threshold_warps(ns),
                                   **row_kernel_pdl("threshold", rows))
    _filter_kernel[(rows, triton.cdiv(ws.S, ws.block))](scores, ws.thresh, ws.cand, ws.count, ws.n_sure, out, ws.hist,
                                                       ws.S, ws.k, ws.cap,
                                                       src, row_stride, stride, ws.n_sample, rank, rank_sure,
                                                       BLOCK=ws.block, HAS_SURE=rank_sure > 0,
                                                       NB=ws.bins, BIN_BRANCH=BIN_BRANCH,
                                                       SCALAR_LOADS=FILTER_SCALAR_LOADS, REVERSED=bool(reverse),
                                                       HERE=ws.threshold_in_filter, **sample,
                                                       ASM_WRITES=asm_writes(),
                                                       num_warps=ws.filter_warps,
                                                       **max_regs(FILTER_MAXNREG), **pdl_args())
    return ws.count


def topk_indices(scores: torch.Tensor, k: int, out: torch.Tensor | None = None, ws: FilterWorkspace | None = None,
                 sampled=False, reverse=False):
    """Exact top-k positions (unsorted, int32) of each row of fp32 scores [..., S].
    sampled: ws.sample already holds each row's sample (as sparq_score writes it, one key
    every stride: its thresholds' ranks at STRIDED_SIGMAS, and where STRIDED_SLOTS the
    pick's slots for them).
    reverse: the filter reads the tiles of each row last first."""
    if scores.dtype != torch.float32 or not scores.is_contiguous():
        raise ValueError("scores must be contiguous float32")
    S = scores.shape[-1]
    if not 1 <= k <= S:
        raise ValueError(f"k must be in [1, {S}], got {k}")
    rows = scores.numel() // S
    if out is None:
        out = torch.empty((*scores.shape[:-1], k), dtype=torch.int32, device=scores.device)
    if ws is None:
        ws = FilterWorkspace(rows, S, k, scores.device)
    if (ws.S, ws.k) != (S, k) or ws.count.numel() != rows:
        raise ValueError("the selection workspace was made for another shape or k")
    filter_candidates(scores, ws, sampled, out, reverse)
    return _pick(scores, ws, out, strided=sampled)


def _pick(scores, ws: FilterWorkspace, out, strided=False):
    """The pick kernel over the candidates a filter left in ws (the selection's last launch),
    its slots for the thresholds of ws.ranks(strided)."""
    rows, S, k = ws.count.numel(), ws.S, ws.k
    capb = triton.next_power_of_2(ws.pick_slots(strided))
    warps = pick_warps(capb, rows)
    oneshot = _one_scan_warps(warps) and rows <= PICK_ONESHOT_ROWS_PER_SM * num_sms()
    _pick_kernel[(rows,)](scores, ws.cand, ws.count, ws.n_sure, ws.thresh, ws.hist, ws.tie, out, S, k, ws.cap,
                          CAPB=capb, BLOCK=PICK_TILE, ONESHOT=oneshot, NB=ws.bins, TIES=ws.ties, BIN_BRANCH=BIN_BRANCH,
                          SCALAR_LOADS=PICK_SCALAR_LOADS, num_warps=warps, **max_regs(PICK_MAXNREG),
                          **row_kernel_pdl("pick", rows))
    return out


def sparq_select(state: SparqState):
    """Step 5: state.idx [B, H_kv, k] = the k largest scores' positions (l newest forced in)."""
    if state.score_filter:  # the score kernel filtered
        return _pick(state.scores, state.sel, state.idx)
    return topk_indices(state.scores, state.k, out=state.idx, ws=state.sel, sampled=True,
                        reverse=filter_reversed(state.G))


def sparq_attend(q, cache: KVCache, state: SparqState, mix_mean=True, num_warps=None, num_stages=None):
    """Steps 6-8 over the chosen positions: returns y [B, Hq, d]."""
    K, V = cache.K, cache.V
    Hkv = cache.n_kv_heads
    d = cache.d_head
    fused = fused_merge(state.G)
    _attend_kernel[(q.shape[0] * Hkv, state.n_splits)](
        q, state.qm, state.inv_tau, K, V, state.idx, state.m_stat, state.l_stat,
        state.o_part, state.m_part, state.l_part, state.a_part, state.merge_count, cache.v_bar, state.out,
        state.k, state.chunk_k, state.n_splits, state.n_chunks, LOG2E / math.sqrt(d),
        q.stride(0), q.stride(1), K.stride(0), K.stride(1), K.stride(2), V.stride(0), V.stride(1), V.stride(2),
        *merge_args(cache.v_bar, state.out),
        Hkv, BLOCK_K=state.block_k, NCP=pow2_bucket(state.n_chunks), SP=pow2_bucket(state.n_splits), MIX=mix_mean,
        FUSED=fused, num_warps=num_warps or ATTEND_WARPS, num_stages=num_stages or state.attend_stages,
        **_meta(q, cache),
        **pdl_args(),
    )
    if not fused:
        launch_merge(state.o_part, state.m_part, state.l_part, state.a_part, cache.v_bar, state.out, state.n_splits,
                     mix=mix_mean)
    return state.out


def sparq_decode(q, cache: KVCache, r=16, k=1024, l=0, mix_mean=True, state: SparqState | None = None):
    """One SparQ decode step of q [B, Hq, d] over the cache -> [B, Hq, d]."""
    check_q(q, cache)
    if state is None or not state.matches(cache, r, k, l):
        state = SparqState(q, cache, r, k, l)
    sparq_score(q, cache, state)
    sparq_select(state)
    return sparq_attend(q, cache, state, mix_mean=mix_mean)
