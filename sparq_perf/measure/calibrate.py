"""Fit the model's efficiency terms to measured rows, and score predictions on held-out points.

Per phase: time = overhead_s + bytes / (bandwidth_fraction * copy bandwidth), fitted by
least squares on relative residuals (scipy), so a 5 us point counts as much as a 5 ms one.
"""
from __future__ import annotations

import numpy as np

from ..calibration import Calibration, PhaseFit

MIN_POINTS = 3


def fit_phase(bytes_moved, times_s, copy_bandwidth_bytes_per_s: float) -> PhaseFit:
    from scipy.optimize import least_squares

    b = np.asarray(bytes_moved, np.float64)
    t = np.asarray(times_s, np.float64)
    x0 = [max(float(np.min(t)) * 0.5, 1e-7), 0.7]  # overhead, fraction of copy bandwidth

    def residual(p):
        return (p[0] + b / (p[1] * copy_bandwidth_bytes_per_s)) / t - 1.0

    sol = least_squares(residual, x0, bounds=([0.0, 1e-4], [1.0, 10.0]), x_scale=[1e-5, 0.5])
    return PhaseFit(bandwidth_fraction=float(sol.x[1]), overhead_s=float(sol.x[0]))


def measured_ok(rows, methods=("dense", "sparq")) -> list[dict]:
    return [r for r in rows if r["source"] == "measured" and r["status"] == "ok" and r["method"] in methods
            and r["time_s"] and r["bytes_read"] is not None]


def fit(rows, device: str, copy_bandwidth_bytes_per_s: float, info: dict | None = None) -> Calibration:
    """A Calibration with one fit per phase that has at least MIN_POINTS measured rows."""
    by_phase: dict[str, list] = {}
    for r in measured_ok(rows):
        by_phase.setdefault(r["phase"], []).append(r)
    phases = {}
    for phase, rs in sorted(by_phase.items()):
        if len(rs) >= MIN_POINTS:
            phases[phase] = fit_phase([r["bytes_read"] + r["bytes_written"] for r in rs], [r["time_s"] for r in rs],
                                      copy_bandwidth_bytes_per_s)
    return Calibration(device, copy_bandwidth_bytes_per_s, phases, info or {})


def predict_row(cal: Calibration, row: dict, copy_bandwidth_bytes_per_s: float | None = None) -> float | None:
    f = cal.phases.get(row["phase"])
    if f is None:
        return None
    bw = copy_bandwidth_bytes_per_s or cal.copy_bandwidth_bytes_per_s
    return f.overhead_s + (row["bytes_read"] + row["bytes_written"]) / (f.bandwidth_fraction * bw)


def error_stats(cal: Calibration, rows, copy_bandwidth_bytes_per_s: float | None = None) -> dict:
    """Per phase and overall: median and 90th percentile of |predicted - measured| / measured."""
    errs: dict[str, list] = {}
    for r in measured_ok(rows):
        p = predict_row(cal, r, copy_bandwidth_bytes_per_s)
        if p is not None:
            errs.setdefault(r["phase"], []).append(abs(p - r["time_s"]) / r["time_s"])
    out = {ph: {"n": len(e), "median_abs_rel_error": float(np.median(e)), "p90_abs_rel_error": float(np.percentile(e, 90))}
           for ph, e in sorted(errs.items())}
    every = [x for e in errs.values() for x in e]
    if every:
        out["all"] = {"n": len(every), "median_abs_rel_error": float(np.median(every)),
                      "p90_abs_rel_error": float(np.percentile(every, 90))}
    return out


def held_out_split(rows) -> tuple[list, list, list]:
    """Train on the shorter half of the distinct sequence lengths, test on the longer half:
    the test extrapolates to whole unseen lengths. Returns (train, test, test lengths)."""
    lengths = sorted({r["seq_len"] for r in measured_ok(rows)})
    cut = lengths[: max(1, len(lengths) // 2)]
    train = [r for r in rows if r["seq_len"] in cut]
    test = [r for r in rows if r["seq_len"] not in cut]
    return train, test, [s for s in lengths if s not in cut]


def calibrate_with_validation(rows, device: str, copy_bandwidth_bytes_per_s: float, info: dict | None = None) -> Calibration:
    """The calibration to use (fitted on every row) with held-out scores in its info."""
    train, test, test_lengths = held_out_split(rows)
    held = fit(train, device, copy_bandwidth_bytes_per_s)
    info = dict(info or {})
    info["held_out"] = {"train_seq_len": sorted({r["seq_len"] for r in train}), "test_seq_len": test_lengths,
                        "errors": error_stats(held, test)}
    full = fit(rows, device, copy_bandwidth_bytes_per_s, info)
    full.info["in_sample_errors"] = error_stats(full, rows)
    return full
