"""How the filter selection sizes its sample and its candidates (no torch: the kernels and
the cost model both use it).

The selection finds a threshold from an evenly strided sample of each row of scores, keeps
the keys at or above it (the candidates) and picks the exact top k among them. The sample
rank is set so that the threshold lies below the k-th largest score but for a vanishing
fraction of rows: the expected number of sampled keys above the k-th largest plus
SAMPLE_SIGMAS of its binomial spread.
"""
from __future__ import annotations

import numpy as np

SAMPLE_MIN, SAMPLE_MAX = 256, 8192  # keys in a row's sample (the whole row when shorter)
SAMPLE_STRIDE = 16  # at most one key in this many (4-byte keys: every other 32-byte sector)
SAMPLE_SIGMAS = 6.0


def sample_size(S, lo=SAMPLE_MIN, hi=SAMPLE_MAX, stride=SAMPLE_STRIDE):
    """One key in `stride`, a power of two in [lo, hi], the whole row when it is shorter."""
    S = np.asarray(S, dtype=np.int64)
    n = np.exp2(np.floor(np.log2(np.maximum(S // stride, 1)))).astype(np.int64)
    return np.minimum(S, np.clip(n, lo, hi))


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
