"""How the filter selection sizes its sample and its candidates (no torch: the kernels and
the cost model both use it).

The selection finds a threshold from a sample of each row of scores (one key every stride
where the score kernel writes it, runs of SAMPLE_RUN_KEYS spread as evenly where it is read
from the scores), keeps
the keys at or above it (the candidates) and picks the exact top k among them. The sample
rank is set so that the threshold lies below the k-th largest score but for a vanishing
fraction of rows: the expected number of sampled keys above the k-th largest plus
SAMPLE_SIGMAS of its binomial spread where the sample is read in runs, STRIDED_SIGMAS where
it is one key every stride (the step's). The candidates' room is sized at SAMPLE_SIGMAS
either way, the pick's slots for the sample's own ranks.
"""
from __future__ import annotations

import numpy as np

SAMPLE_MIN, SAMPLE_MAX = 256, 8192  # keys in a row's sample (the whole row when shorter)
SAMPLE_STRIDE = 16  # at most one key in this many (4-byte keys: every other 32-byte sector)
SAMPLE_SIGMAS = 6.0
# read from the scores (the selection alone), the sample is runs of this many consecutive
# keys (64 B), one run every SAMPLE_RUN_KEYS * stride positions: 1/stride of the rows' lines,
# where one key every stride-th position (64 B apart at stride 16) touched every line of
# DRAM (H200, 2048 x 16k: the threshold kernel read 134 MB in 46 us,
# reports/kernels/ncu_select_cb2545b.csv). The score kernel writes the step's sample at every
# stride-th position. On independent scores both are samples of the same size; on scores
# correlated along the row a run's keys are alike, so the threshold spreads more than
# SAMPLE_SIGMAS allows for (exact still: the pick's fallback; experiments/NOTES.md)
SAMPLE_RUN_KEYS = 16
# ... but one key every stride is a sample whose keys lie far apart along the row (on the
# AR(1) rows tried, sample_runs.py: no row of 20000 missed at 4 sigmas, up to 0.99, where
# runs missed 1.7 % at 0.9; scores periodic at a divisor of the stride would still bias it,
# to the pick's fallback: slower, exact), so the step's threshold
# (the score kernel's strided sample) is taken at this many sigmas: a miss 5e-7 a row at
# S=16k, k=1024 (the binomial tail), 13 % fewer candidates. H200 (reports/kernels/
# tune_fixed_668b088.json, select in the step, us, 6 -> 4 sigmas): B=64 S=4k 63.9 -> 60.1,
# B=16 S=32k 78.8 -> 76.9, B=8 S=16k 38.8 -> 37.8, GQA B=16 S=32k 36.8 -> 35.2, B=1 S=32k
# 18.0 -> 17.9, B=1 S=128k 51.9 -> 52.2 (3 sigmas: 58.8, 75.2, 37.9, 35.8, 17.9, 49.8, at a
# miss 4e-5 a row at 16k and 2e-4 at 128k, k=8192)
STRIDED_SIGMAS = 4.0
# keys per program of the filter pass (a grid of rows x tiles of S), in one warp (the
# kernels' FILTER_WARPS). H200, 2048 -> 1024 keys in 4 warps (reports/kernels/
# tune_fixed_b16b0db.json): select in the step B=16 S=32k 101.9 -> 90.1 us, B=64 S=4k 79.8 ->
# 72.1, B=1 S=32k 18.0 -> 17.4; alone 2048 x 16k, k=1024 231.9 -> 210.8 (4096: slower
# everywhere, 296.7 there). Then 1024 in 4 warps -> 512 in one (tune_fixed_c3317c8.json): the
# counts and scans within a warp, no barrier: select in the step B=16 S=32k 95.1 -> 84.1, B=64
# S=4k 69.8 -> 66.2, B=1 S=128k 59.6 -> 54.5, B=1 S=32k 16.0 -> 16.1; alone 2048 x 16k 208.7
# -> 186.7 (256 keys in one warp: 243.4, twice the programs; 512 in two warps 201.3)
FILTER_BLOCK = 512
# where a selection has at most this many rows, its filter programs find the thresholds from
# the sample themselves (no threshold launch); they then run in as many warps as hold the
# sample at THRESHOLD_KEYS_PER_THREAD keys a thread (1 to 16), on tiles of FILTER_BLOCK
# scores a warp (0: never; measured slower at most shapes: the kernels' THRESHOLD_IN_FILTER)
THRESHOLD_IN_FILTER_MAX_ROWS = 0
THRESHOLD_KEYS_PER_THREAD = 16


def threshold_in_filter(rows):
    """Whether the filter programs of a selection of `rows` rows find the thresholds themselves."""
    return np.asarray(rows) <= THRESHOLD_IN_FILTER_MAX_ROWS


def threshold_in_filter_warps(n_sample):
    """Warps of the filter programs that hold a sample of n_sample keys (threshold_in_filter)."""
    ns = _pow2(n_sample)
    return np.clip(ns // (32 * THRESHOLD_KEYS_PER_THREAD), 1, 16).astype(np.int64)
# the pick's histogram: a bin for every PICK_BINS_PER_KEYS keys of the row, a power of two in
# [PICK_BINS_MIN, PICK_BINS_MAX] (about 10 keys in the bin of the k-th largest at k = S/16
# on normal scores, where the sample's span from the threshold up fills the bins)
PICK_BINS_PER_KEYS = 32
PICK_BINS_MIN, PICK_BINS_MAX = 256, 4096


def pick_bins(S):
    """Bins of the pick's histogram for rows of S keys."""
    n = np.exp2(np.ceil(np.log2(np.maximum(np.asarray(S, np.float64) // PICK_BINS_PER_KEYS, 1.0))))
    return np.clip(n, PICK_BINS_MIN, PICK_BINS_MAX).astype(np.int64)


def sample_size(S, lo=SAMPLE_MIN, hi=SAMPLE_MAX, stride=SAMPLE_STRIDE):
    """One key in `stride`, a power of two in [lo, hi], the whole row when it is shorter."""
    S = np.asarray(S, dtype=np.int64)
    n = np.exp2(np.floor(np.log2(np.maximum(S // stride, 1)))).astype(np.int64)
    return np.minimum(S, np.clip(n, lo, hi))


def sample_run(S, n):
    """Consecutive keys a run of the sample of n keys read from rows of S scores:
    SAMPLE_RUN_KEYS, at most the largest power of two <= n; 1 where the sample is the row."""
    S, n, run = np.asarray(S, np.int64), np.asarray(n, np.int64), SAMPLE_RUN_KEYS
    p2 = np.exp2(np.floor(np.log2(np.maximum(n, 1)))).astype(np.int64)
    return np.where(n >= S, 1, np.minimum(run, p2)).astype(np.int64)


def rank_sigmas(strided):
    """The threshold rank's sigmas for a sample one key every stride (strided) or in runs."""
    return STRIDED_SIGMAS if strided else SAMPLE_SIGMAS


def sample_rank(S, k, n, sigmas=SAMPLE_SIGMAS):
    """Rank of the threshold in a sample of n keys (exactly k when the sample is the row)."""
    S, k, n = (np.asarray(x, dtype=np.float64) for x in (S, k, n))
    mean = n * k / S
    rank = np.minimum(n, np.ceil(mean + sigmas * np.sqrt(mean) + 8))
    return np.where(n >= S, k, rank).astype(np.int64)


def candidates(S, k, n, sigmas=SAMPLE_SIGMAS, spread=0.0):
    """Keys at or above the threshold: S * p for the sample quantile p = rank / n, plus
    `spread` standard deviations of it (S * sqrt(p (1 - p) / n)); k when the sample is the row."""
    S_, k_, n_ = (np.asarray(x, dtype=np.float64) for x in (S, k, n))
    p = sample_rank(S, k, n, sigmas) / np.minimum(n_, S_)
    c = S_ * p + spread * S_ * np.sqrt(p * (1 - p) / np.minimum(n_, S_))
    return np.where(n_ >= S_, k_, c)


# A second, sure threshold from the same sample: every key at or above it is in the top k
# but for a vanishing fraction of rows, so the filter writes those positions straight to
# the output and keeps as candidates only the keys between the two thresholds (the band),
# of which the pick then takes the k - (sure keys) largest. The band grows as sqrt(k), the
# candidates at or above the lower threshold as k: used where it shrinks the pick's slots.
PICK_SLOT_SIGMAS = 3.0  # the pick's slots (its first tile): the expected candidates + this many sigmas


def sure_rank(S, k, n, sigmas=SAMPLE_SIGMAS):
    """Rank of the sure threshold in a sample of n keys: the expected number of sampled keys
    above the k-th largest less `sigmas` of its spread; 0 (none) where that is not positive
    or the sample is the row."""
    S, k, n = (np.asarray(x, dtype=np.float64) for x in (S, k, n))
    mean = n * k / S
    rank = np.maximum(np.floor(mean - sigmas * np.sqrt(mean) - 8), 0)
    return np.where(n >= S, 0, rank).astype(np.int64)


def band(S, k, n, sigmas=SAMPLE_SIGMAS, spread=0.0):
    """Keys between the two thresholds: S * q for q = (rank - sure rank) / n, plus `spread`
    standard deviations of it."""
    S_, n_ = (np.asarray(x, dtype=np.float64) for x in (S, n))
    q = (sample_rank(S, k, n, sigmas) - sure_rank(S, k, n, sigmas)) / np.minimum(n_, S_)
    return S_ * q + spread * S_ * np.sqrt(q * (1 - q) / np.minimum(n_, S_))


def _pow2(x):
    """The least power of two >= x (>= 1)."""
    return np.exp2(np.ceil(np.log2(np.maximum(np.asarray(x, np.float64), 1.0))))


def slots_for(expected, floor=16):
    """A power of two holding `expected` keys and 64 more, at least `floor`."""
    return np.maximum(floor, np.exp2(np.ceil(np.log2(np.asarray(expected, np.float64) + 64)))).astype(np.int64)


# ... used only where the candidates would need at least this many slots (16 warps and more
# in the pick). H100 (reports/kernels/tune_sparq_203e49d.json, kernels.json at 6612bae):
# 16384 -> 8192 slots 32 rows x 32k, k=8192 63.5 -> 38.2 us; 65536 -> 16384 at 128k, k=32768
# 212.5 -> 95.3; but 8192 -> 4096 lost in the step: B=16 S=32k k=4096 151 -> 180, B=1 33 -> 35
# (these rules were tuned on the bisection pick the pick by bins replaced; not measured again)
SURE_MIN_SLOTS = 16384
# ... and where it makes less serial work (the band and the sample's second bisection
# against the candidates: band + n < candidates), or the rows are at most SURE_FEW_ROWS,
# where each row's program has an SM to itself and the smaller pick wins regardless. H200
# (reports/kernels/sure_rows_80ceb58.json, selection alone, us without -> with): S=128k,
# k=8192 (10496 candidates, 4608 in the band, 8192 sampled) 8 rows 62.7 -> 43.8, 32 rows
# 78.1 -> 68.6, 64 rows 95.3 -> 98.1, 512 rows 484.5 -> 593.3; S=64k, k=8192 (4096 sampled)
# 512 rows 343.1 -> 332.8; S=128k, k=16384 (19584 candidates, 6400 in the band) 512 rows
# 651.7 -> 604.2
SURE_FEW_ROWS = 32


def uses_sure(S, k, n, rows, sigmas=SAMPLE_SIGMAS):
    """Whether the selection of `rows` rows uses the sure threshold: where there is one, the
    candidates at or above the lower threshold need SURE_MIN_SLOTS pick slots or more and the
    band fewer, and it makes less serial work or the rows are few."""
    band_slots = slots_for(band(S, k, n, sigmas, spread=PICK_SLOT_SIGMAS))
    all_slots = slots_for(candidates(S, k, n, sigmas, spread=PICK_SLOT_SIGMAS), floor=_pow2(k))
    less_work = band(S, k, n, sigmas) + np.asarray(n, np.float64) < candidates(S, k, n, sigmas)
    return ((sure_rank(S, k, n, sigmas) > 0) & (all_slots >= SURE_MIN_SLOTS) & (band_slots < all_slots)
            & (less_work | (np.asarray(rows) <= SURE_FEW_ROWS)))


def picked_from(S, k, n, sure, sigmas=SAMPLE_SIGMAS, spread=0.0):
    """The keys the pick holds: the band where the sure threshold is used (`sure`, as
    uses_sure decides), else every key at or above the lower threshold."""
    return np.where(sure, band(S, k, n, sigmas, spread), candidates(S, k, n, sigmas, spread))


def pick_room(S, k, n, sure, sigmas, rank_sigmas=SAMPLE_SIGMAS):
    """Room for the picked keys, a power of two: their expected count (the thresholds at
    `rank_sigmas`), `sigmas` standard deviations and 64 more, at least k's power of two (16
    where the sure threshold holds keys back), at most S's. With SAMPLE_SIGMAS: the
    candidates' room in memory; with PICK_SLOT_SIGMAS: the pick's slots."""
    want = slots_for(picked_from(S, k, n, sure, rank_sigmas, spread=sigmas), floor=1)
    least = np.where(sure, 16.0, _pow2(k))
    return np.maximum(least, np.minimum(_pow2(S), want)).astype(np.int64)


def pick_slots_held(S, k, n, sure, rank_sigmas=SAMPLE_SIGMAS):
    """The keys a pick program reads in its first tile: its slots (for thresholds at
    `rank_sigmas`: rank_sigmas(strided)), within the candidates' room (sized at
    SAMPLE_SIGMAS, for either sample)."""
    return np.minimum(pick_room(S, k, n, sure, SAMPLE_SIGMAS),
                      pick_room(S, k, n, sure, PICK_SLOT_SIGMAS, rank_sigmas))
