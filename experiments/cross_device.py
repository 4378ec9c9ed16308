"""Cross-device check: one GPU's calibration, given only another GPU's measured copy
bandwidth, predicts that GPU's measured rows.

    python experiments/cross_device.py reports/h100-sxm reports/h200 [--out reports/cross_device.json]
    python experiments/cross_device.py reports/h200 NEW --before reports/h200   # a kernel change

Prints median and 90th-percentile |predicted - measured| / measured per phase, three ways:
the calibration on its own rows (in sample), on the other GPU's rows with that GPU's copy
bandwidth (the check), and with the calibration's own bandwidth (what ignoring the
device would cost). With --before DIR (rows of the same GPU before a change): the
calibration on DIR's rows at the target's points too, and per phase the median of measured
time target / before at those points.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sparq_perf.calibration import load_calibration
import numpy as np

from sparq_perf.measure.calibrate import error_stats, measured_ok
from sparq_perf.rows import read_csv


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("source", help="measure output folder whose calibration.yaml is used")
    ap.add_argument("target", help="measure output folder whose rows are predicted")
    ap.add_argument("--out", help="write the statistics as JSON here")
    ap.add_argument("--before", help="measure output folder of the same points before a change")
    args = ap.parse_args(argv)
    src, dst = Path(args.source), Path(args.target)
    cal = load_calibration(src / "calibration.yaml")
    target_bw = json.loads((dst / "metadata.json").read_text())["copy_bandwidth_bytes_per_s"]
    result = {
        "calibration": str(src / "calibration.yaml"), "target_rows": str(dst / "rows.csv"),
        "source_copy_bandwidth_bytes_per_s": cal.copy_bandwidth_bytes_per_s,
        "target_copy_bandwidth_bytes_per_s": target_bw,
        "in_sample": error_stats(cal, read_csv(src / "rows.csv")),
        "cross_device": error_stats(cal, read_csv(dst / "rows.csv"), target_bw),
        "cross_device_source_bandwidth": error_stats(cal, read_csv(dst / "rows.csv")),
    }
    print(f"{src.name} calibration ({cal.copy_bandwidth_bytes_per_s / 1e9:.0f} GB/s) -> {dst.name} rows "
          f"({target_bw / 1e9:.0f} GB/s); median / p90 |predicted - measured| / measured")
    print(f"{'phase':14s} {'in sample':>15s} {'cross-device':>15s} {'same bandwidth':>15s}")
    for phase in result["cross_device"]:
        cells = []
        for key in ("in_sample", "cross_device", "cross_device_source_bandwidth"):
            s = result[key].get(phase)
            cells.append(f"{s['median_abs_rel_error'] * 100:5.1f}% / {s['p90_abs_rel_error'] * 100:5.1f}%" if s else "-")
        print(f"{phase:14s} " + " ".join(f"{c:>15s}" for c in cells))
    if args.before:
        result.update(before(cal, Path(args.before), read_csv(dst / "rows.csv")))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


def _point(r):
    return tuple(r[c] for c in ("model", "batch", "seq_len", "n_heads", "n_kv_heads", "d_head", "r", "k", "l",
                                "kv_dtype", "phase", "method", "scope"))


def before(cal, folder: Path, after_rows) -> dict:
    """The calibration on `folder`'s rows at the points of after_rows (at that folder's copy
    bandwidth), and per phase the median and least measured time after / before there."""
    bw = json.loads((folder / "metadata.json").read_text())["copy_bandwidth_bytes_per_s"]
    after = {_point(r): r["time_s"] for r in measured_ok(after_rows)}
    rows = [r for r in read_csv(folder / "rows.csv") if _point(r) in after]
    ratios: dict[str, list] = {}
    for r in measured_ok(rows):
        ratios.setdefault(r["phase"], []).append(after[_point(r)] / r["time_s"])
    out = {"before_rows": str(folder / "rows.csv"), "before_at_the_points": error_stats(cal, rows, bw),
           "median_time_after_over_before": {ph: float(np.median(v)) for ph, v in sorted(ratios.items())},
           "least_time_after_over_before": {ph: float(np.min(v)) for ph, v in sorted(ratios.items())}}
    print(f"before the change ({folder.name} rows at the same points, their copy bandwidth):")
    for phase, st in out["before_at_the_points"].items():
        t, least = out["median_time_after_over_before"].get(phase), out["least_time_after_over_before"].get(phase)
        print(f"{phase:14s} {st['median_abs_rel_error'] * 100:5.1f}% / {st['p90_abs_rel_error'] * 100:5.1f}%"
              + (f"   measured after / before {t:.3f} median, {least:.3f} least" if t else ""))
    return out


if __name__ == "__main__":
    raise SystemExit(main())
