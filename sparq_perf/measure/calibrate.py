"""Fit the model's efficiency terms to measured rows, and score predictions on held-out points.

Per phase: time = overhead_s + bytes / (bandwidth_fraction * copy bandwidth)
+ serial_s_per_item * serial work (phases with one program per row: the selection's
threshold and pick, whose rows beyond the compute units wait for later waves)
+ s_per_program_wave * program waves (split kernels whose programs each pay a fixed cost:
the attend), fitted by least squares on relative residuals (scipy), so a 5 us point counts
as much as a 5 ms one. A term enters a phase's fit only where its rows have that work.
"""
from __future__ import annotations

import numpy as np

from ..calibration import Calibration, PhaseFit
from ..cost.base import program_waves, serial_waves

MIN_POINTS = 3


def fit_phase(bytes_moved, times_s, copy_bandwidth_bytes_per_s: float, serial=None, waves=None) -> PhaseFit:
    from scipy.optimize import least_squares

    b = np.asarray(bytes_moved, np.float64)
    t = np.asarray(times_s, np.float64)
    # optional terms, each a work count per row with a coefficient in seconds per item
    extra = {name: np.asarray(x, np.float64) for name, x in (("serial_s_per_item", serial), ("s_per_program_wave", waves))
             if x is not None and np.any(np.asarray(x) > 0)}
    work = list(extra.values())
    x0 = [max(float(np.min(t)) * 0.5, 1e-7), 0.7] + [1e-9] * len(work)
    scale = [1e-5, 0.5] + [float(np.min(t)) / max(float(np.max(w)), 1e-300) for w in work]

    def residual(p):
        return (p[0] + b / (p[1] * copy_bandwidth_bytes_per_s) + sum(c * w for c, w in zip(p[2:], work))) / t - 1.0

    lower, upper = [0.0, 1e-4] + [0.0] * len(work), [1.0, 10.0] + [1.0] * len(work)
    sol = least_squares(residual, x0, bounds=(lower, upper), x_scale=scale)
    return PhaseFit(bandwidth_fraction=float(sol.x[1]), overhead_s=float(sol.x[0]),
                    **{name: float(c) for name, c in zip(extra, sol.x[2:])})


def row_cost(row):
    """The model's cost of a measured row's phase (a whole step: its phases combined)."""
    from ..cost.attention import attention_costs
    from ..cost.base import combine
    from ..phase_model import STEP_PHASES, model_method
    from ..units import dtype_bytes
    from ..workload import Workload

    w = Workload(int(row["batch"]), int(row["seq_len"]), int(row["n_heads"]), int(row["n_kv_heads"]),
                 int(row["d_head"]), row.get("r") or 1, row.get("k") or 1, row.get("l") or 0,
                 dtype_bytes(row.get("kv_dtype") or "bf16"), 2.0)
    phase = row["phase"]
    costs = attention_costs(model_method(row["method"], phase), w)
    if phase in STEP_PHASES:
        return combine(phase, [costs[n] for n in STEP_PHASES[phase]])
    return costs[phase]


WORKLOAD_FIELDS = ("batch", "seq_len", "n_heads", "n_kv_heads", "d_head")


def row_work(row, compute_units: int) -> tuple[float, float]:
    """The row's phase's (serial work, program waves): items done one after another per
    compute unit, and waves of its split-grid programs over the units ((0, 0): none, or a
    row without the workload fields to tell)."""
    if any(row.get(f) is None for f in WORKLOAD_FIELDS):
        return 0.0, 0.0
    cost = row_cost(row)
    return float(serial_waves(cost, compute_units)), float(program_waves(cost, compute_units))


def selection_path(row) -> str | None:
    """For a sparq_select row, the selection's path: "sure" where the filter uses the sure
    threshold (select_plan.uses_sure: from long rows and large k), else "plain"; None for
    any other row, or one without the fields to tell."""
    from .. import select_plan as plan

    if row.get("phase") != "sparq_select" or any(row.get(f) is None for f in WORKLOAD_FIELDS + ("k",)):
        return None
    S, k = int(row["seq_len"]), int(row["k"])
    return "sure" if bool(plan.uses_sure(S, k, plan.sample_size(S), int(row["batch"]) * int(row["n_kv_heads"]))) else "plain"


def measured_ok(rows, methods=("dense", "sparq")) -> list[dict]:
    return [r for r in rows if r["source"] == "measured" and r["status"] == "ok" and r["method"] in methods
            and r["time_s"] and r["bytes_read"] is not None]


def fit(rows, device: str, copy_bandwidth_bytes_per_s: float, info: dict | None = None,
        compute_units: int = 132) -> Calibration:
    """A Calibration with one fit per phase that has at least MIN_POINTS measured rows."""
    by_phase: dict[str, list] = {}
    for r in measured_ok(rows):
        by_phase.setdefault(r["phase"], []).append(r)
    phases = {}
    for phase, rs in sorted(by_phase.items()):
        if len(rs) >= MIN_POINTS:
            serial, waves = zip(*(row_work(r, compute_units) for r in rs))
            phases[phase] = fit_phase([r["bytes_read"] + r["bytes_written"] for r in rs], [r["time_s"] for r in rs],
                                      copy_bandwidth_bytes_per_s, serial, waves)
    return Calibration(device, copy_bandwidth_bytes_per_s, phases, info or {}, compute_units)


def predict_row(cal: Calibration, row: dict, copy_bandwidth_bytes_per_s: float | None = None) -> float | None:
    f = cal.phases.get(row["phase"])
    if f is None:
        return None
    bw = copy_bandwidth_bytes_per_s or cal.copy_bandwidth_bytes_per_s
    serial, waves = row_work(row, cal.compute_units) if f.serial_s_per_item or f.s_per_program_wave else (0.0, 0.0)
    return (f.overhead_s + (row["bytes_read"] + row["bytes_written"]) / (f.bandwidth_fraction * bw)
            + f.serial_s_per_item * serial + f.s_per_program_wave * waves)


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


def calibrate_with_validation(rows, device: str, copy_bandwidth_bytes_per_s: float, info: dict | None = None,
                              compute_units: int = 132) -> Calibration:
    """The calibration to use (fitted on every row) with held-out scores in its info."""
    train, test, test_lengths = held_out_split(rows)
    held = fit(train, device, copy_bandwidth_bytes_per_s, compute_units=compute_units)
    info = dict(info or {})
    info["held_out"] = {"train_seq_len": sorted({r["seq_len"] for r in train}), "test_seq_len": test_lengths,
                        "errors": error_stats(held, test)}
    # the selection's held-out rows by path: a path no training row takes is extrapolated twice
    by_path: dict[str, list] = {}
    if "sparq_select" in held.phases:
        for r in measured_ok(test):
            if (p := selection_path(r)) is not None:
                by_path.setdefault(p, []).append(r)
    trained = {selection_path(r) for r in measured_ok(train)}
    info["held_out"]["select_by_path"] = {p: {**error_stats(held, rs)["sparq_select"], "in_training": p in trained}
                                          for p, rs in sorted(by_path.items())}
    full = fit(rows, device, copy_bandwidth_bytes_per_s, info, compute_units)
    full.info["in_sample_errors"] = error_stats(full, rows)
    return full
