"""The paper's transfer formulas (SparQ Attention, ICML 2024, Eqs. 3 and 11 and Table 1):
elements moved per attention head per generated token. Kept verbatim beside the
implementation-level model, which counts what these omit (indices, scores, q, outputs)."""
from __future__ import annotations

import numpy as np


def dense_elements(S, d_h):
    return 2.0 * np.asarray(S) * d_h + 2.0 * d_h


def sparq_elements(S, d_h, r, k):
    return np.asarray(S) * np.asarray(r) + 2.0 * np.asarray(k) * d_h + 4.0 * d_h


def h2o_elements(S, d_h, k):
    return 2.0 * np.asarray(k) * d_h + 2.0 * d_h + 2.0 * np.asarray(S)


def lm_infinite_elements(S, d_h, k):
    return 2.0 * np.asarray(k) * d_h + 2.0 * d_h + 0.0 * np.asarray(S)


def flexgen_elements(S, d_h, k):
    return np.asarray(S) * d_h + np.asarray(k) * d_h + 2.0 * d_h


PAPER_FORMULAS = {
    "dense": lambda S, d_h, r, k: dense_elements(S, d_h),
    "sparq": sparq_elements,
    "h2o": lambda S, d_h, r, k: h2o_elements(S, d_h, k),
    "lm-infinite": lambda S, d_h, r, k: lm_infinite_elements(S, d_h, k),
    "flexgen": lambda S, d_h, r, k: flexgen_elements(S, d_h, k),
}


def compression_ratio(method: str, S, d_h, r, k):
    """M_method / M_dense: the fraction of dense attention transfers the method keeps."""
    return PAPER_FORMULAS[method](S, d_h, r, k) / dense_elements(S, d_h)
