"""Calibration recovers known efficiency terms and extrapolates to held-out lengths."""
import numpy as np
import pytest

from sparq_perf.calibration import load_calibration
from sparq_perf.measure.calibrate import calibrate_with_validation, error_stats, fit, held_out_split


def _rows(rng, phase, overhead, fraction, bw, noise=0.0):
    rows = []
    for S in (4096, 8192, 16384, 32768, 65536, 131072):
        for B in (1, 8):
            b = 2 * B * 32 * S * 128 * 2.0
            t = (overhead + b / (fraction * bw)) * (1 + noise * rng.standard_normal())
            rows.append({"source": "measured", "status": "ok", "method": "dense", "phase": phase, "seq_len": S,
                         "batch": B, "bytes_read": b, "bytes_written": 0.0, "time_s": t})
    return rows


def test_fit_recovers_overhead_and_bandwidth_fraction():
    rng = np.random.default_rng(0)
    rows = _rows(rng, "dense_attention", 7e-6, 0.93, 3.0e12)
    cal = fit(rows, "h100-sxm", 3.0e12)
    f = cal.phases["dense_attention"]
    assert f.overhead_s == pytest.approx(7e-6, rel=1e-3)
    assert f.bandwidth_fraction == pytest.approx(0.93, rel=1e-4)


def test_fit_recovers_the_serial_term_of_the_selection():
    """Selection rows whose time has a part per candidate and wave of rows over the compute
    units: the fit finds the seconds per item, and the plain two-term fit cannot match."""
    from sparq_perf.cost.attention import attention_costs
    from sparq_perf.cost.base import serial_waves
    from sparq_perf.workload import Workload

    rows = []
    for S in (4096, 16384, 65536):
        for B in (1, 16, 64):
            w = Workload(B, S, 32, 32, 128, 16, S // 16, 0, 2.0, 2.0)
            c = attention_costs("sparq", w)["sparq_select"]
            t = 6e-6 + c.bytes / (0.5 * 3.0e12) + 4e-9 * serial_waves(c, 132)
            rows.append({"source": "measured", "status": "ok", "method": "sparq", "phase": "sparq_select",
                         "batch": B, "seq_len": S, "n_heads": 32, "n_kv_heads": 32, "d_head": 128, "r": 16,
                         "k": S // 16, "l": 0, "kv_dtype": "bf16", "bytes_read": float(c.bytes_read),
                         "bytes_written": float(c.bytes_written), "time_s": t})
    cal = fit(rows, "h100-sxm", 3.0e12, compute_units=132)
    f = cal.phases["sparq_select"]
    assert f.serial_s_per_item == pytest.approx(4e-9, rel=1e-3)
    assert f.bandwidth_fraction == pytest.approx(0.5, rel=1e-3)
    assert error_stats(cal, rows)["all"]["median_abs_rel_error"] < 1e-3
    plain = fit([{k: v for k, v in r.items() if k != "n_heads"} for r in rows], "h100-sxm", 3.0e12)
    assert plain.phases["sparq_select"].serial_s_per_item == 0.0
    assert error_stats(plain, rows)["all"]["median_abs_rel_error"] > 0.05


def test_fit_recovers_the_attends_program_term():
    """Attend rows whose time has a fixed part per program of its split grid: the fit finds
    the seconds per wave of programs; the two-term fit cannot match them."""
    from sparq_perf.cost.attention import attention_costs
    from sparq_perf.cost.base import program_waves
    from sparq_perf.workload import Workload

    rows = []
    for S in (4096, 16384, 65536):
        for B, Hkv in ((1, 8), (1, 32), (8, 32), (64, 8)):
            w = Workload(B, S, 32, Hkv, 128, 16, S // 16, 0, 2.0, 2.0)
            c = attention_costs("sparq", w)["sparq_attend"]
            t = 6e-6 + c.bytes / (0.85 * 4.0e12) + 0.9e-6 * program_waves(c, 132)
            rows.append({"source": "measured", "status": "ok", "method": "sparq", "phase": "sparq_attend",
                         "batch": B, "seq_len": S, "n_heads": 32, "n_kv_heads": Hkv, "d_head": 128, "r": 16,
                         "k": S // 16, "l": 0, "kv_dtype": "bf16", "bytes_read": float(c.bytes_read),
                         "bytes_written": float(c.bytes_written), "time_s": float(t)})
    cal = fit(rows, "h200", 4.0e12, compute_units=132)
    f = cal.phases["sparq_attend"]
    assert f.s_per_program_wave == pytest.approx(0.9e-6, rel=1e-3)
    assert f.bandwidth_fraction == pytest.approx(0.85, rel=1e-3)
    assert f.serial_s_per_item == 0.0
    assert error_stats(cal, rows)["all"]["median_abs_rel_error"] < 1e-3
    plain = fit([{k: v for k, v in r.items() if k != "n_heads"} for r in rows], "h200", 4.0e12)
    assert plain.phases["sparq_attend"].s_per_program_wave == 0.0
    assert error_stats(plain, rows)["all"]["p90_abs_rel_error"] > 0.02


def test_held_out_lengths_are_the_longer_ones_and_errors_are_reported(tmp_path):
    rng = np.random.default_rng(1)
    rows = _rows(rng, "dense_attention", 5e-6, 0.9, 3.0e12, noise=0.03)
    train, test, lengths = held_out_split(rows)
    assert lengths == [32768, 65536, 131072]
    assert max(r["seq_len"] for r in train) < min(r["seq_len"] for r in test)
    cal = calibrate_with_validation(rows, "h100-sxm", 3.0e12)
    errs = cal.info["held_out"]["errors"]["dense_attention"]
    assert errs["n"] == 6 and errs["median_abs_rel_error"] < 0.08
    path = tmp_path / "cal.yaml"
    cal.save(path)
    back = load_calibration(path)
    assert back.phases["dense_attention"] == cal.phases["dense_attention"]
    assert back.compute_units == cal.compute_units


def test_a_wrong_model_shows_large_errors():
    rng = np.random.default_rng(2)
    rows = _rows(rng, "dense_attention", 5e-6, 0.9, 3.0e12)
    cal = fit(rows, "h100-sxm", 3.0e12)
    # the same calibration judged on a device with half the copy bandwidth is ~2x off
    assert error_stats(cal, rows, copy_bandwidth_bytes_per_s=1.5e12)["all"]["median_abs_rel_error"] > 0.5


def test_cross_device_script_on_the_committed_measurements(tmp_path, capsys):
    """experiments/cross_device.py reads one GPU's calibration and another's rows."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("cross_device", root / "experiments" / "cross_device.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "x.json"
    assert mod.main([str(root / "reports" / "h100-sxm"), str(root / "reports" / "h200"), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["target_copy_bandwidth_bytes_per_s"] > res["source_copy_bandwidth_bytes_per_s"]
    dense = res["cross_device"]["dense_decode"]
    assert dense["n"] > 10 and 0 <= dense["median_abs_rel_error"] <= dense["p90_abs_rel_error"]
    # the H200's bandwidth matters: predicting with the H100's own is worse for dense decode
    assert res["cross_device_source_bandwidth"]["dense_decode"]["median_abs_rel_error"] > dense["median_abs_rel_error"]
    assert "dense_decode" in capsys.readouterr().out
    # --before: the rows of the same points before a change. Against the target's own rows,
    # every time is unchanged and the errors are the check's; against the H100's at the same
    # points, the H200's dense decode is faster
    h200 = str(root / "reports" / "h200")
    assert mod.main([str(root / "reports" / "h100-sxm"), h200, "--before", h200, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["median_time_after_over_before"].values()) == {1.0}
    assert res["before_at_the_points"] == res["cross_device"]
    assert mod.main([str(root / "reports" / "h200"), h200, "--before", str(root / "reports" / "h100-sxm"),
                     "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["median_time_after_over_before"]["dense_decode"] < 0.9  # the H200 faster than the H100
    assert res["least_time_after_over_before"]["dense_decode"] <= res["median_time_after_over_before"]["dense_decode"]


def test_held_out_selection_errors_split_by_path():
    """The held-out selection rows are scored by path too, each marked with whether a training
    row takes it: the sure threshold (k >= 8192 from S = 32k) never occurs at the training
    lengths here, so its rows are extrapolated in path as well as in length; where the time
    holds a term only the sure rows pay, the plain rows still fit and the sure ones do not."""
    from sparq_perf.cost.attention import attention_costs
    from sparq_perf.cost.base import serial_waves
    from sparq_perf.measure.calibrate import selection_path
    from sparq_perf.workload import Workload

    rows = []
    for S in (4096, 8192, 16384, 32768, 65536, 131072):
        for B in (1, 8):
            for k in (S // 16, S // 4):
                w = Workload(B, S, 32, 32, 128, 16, k, 0, 2.0, 2.0)
                c = attention_costs("sparq", w)["sparq_select"]
                row = {"source": "measured", "status": "ok", "method": "sparq", "phase": "sparq_select", "batch": B,
                       "seq_len": S, "n_heads": 32, "n_kv_heads": 32, "d_head": 128, "r": 16, "k": k, "l": 0,
                       "kv_dtype": "bf16", "bytes_read": float(c.bytes_read), "bytes_written": float(c.bytes_written)}
                sure = selection_path(row) == "sure"
                row["time_s"] = (6e-6 + c.bytes / (0.5 * 3.0e12) + 4e-9 * serial_waves(c, 132)) * (1.5 if sure else 1.0)
                rows.append(row)
    assert {selection_path(r) for r in rows if r["seq_len"] <= 16384} == {"plain"}
    assert selection_path({**rows[0], "phase": "sparq_attend"}) is None
    cal = calibrate_with_validation(rows, "h100-sxm", 3.0e12, compute_units=132)
    paths = cal.info["held_out"]["select_by_path"]
    assert set(paths) == {"plain", "sure"}
    assert paths["plain"]["in_training"] and not paths["sure"]["in_training"]
    assert paths["plain"]["n"] + paths["sure"]["n"] == cal.info["held_out"]["errors"]["sparq_select"]["n"] == 12
    assert paths["plain"]["median_abs_rel_error"] < 1e-3
    assert paths["sure"]["median_abs_rel_error"] == pytest.approx(1 / 3, rel=1e-3)  # predicted t for 1.5 t
