"""Phase timings with one query per cache set (as the sweeps before query rotation timed
them) against queries rotated until SparQ's reads cover 5x L2 (measure.point.query_sets).

A SparQ phase alone reads a few MB of a cache (r rows of K^T; k rows of K and V); replayed
on one query it reads the same rows every call, from L2. The whole step reads them after
the score has passed through L2, so the phases timed alone should add up to about the step.

    python experiments/cold_phases.py --out reports/kernels
Writes cold_phases.json; prints per point and phase the median of each way, and the sum of
the three phases against the whole step.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

import torch
import triton

from sparq_perf import phases as P
from sparq_perf.measure import point

POINTS = [(1, 32768, 32), (1, 32768, 8), (1, 131072, 32), (8, 16384, 32), (16, 32768, 8)]  # (B, S, H_kv)
SETTINGS = ((16, None), (32, 128))
PHASES = (P.SPARQ_SCORE, P.SPARQ_SELECT, P.SPARQ_ATTEND, P.SPARQ_DECODE)


def one_query_per_set(B, Hkv, S, d, e, settings, n_sets, free_bytes, sets_for):
    return n_sets


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/kernels")
    args = ap.parse_args(argv)
    rotate = point.query_sets
    res = []
    for B, S, Hkv in POINTS:
        for way, fn in (("one query per set", one_query_per_set), ("queries rotated", rotate)):
            point.query_sets = fn
            rows = point.measure_point(B, S, 32, Hkv, 128, SETTINGS, with_topk=False)
            for x in rows:
                if x["method"] == "sparq":
                    res.append(dict(B=B, S=S, Hkv=Hkv, way=way, r=x["r"], k=x["k"], phase=x["phase"],
                                    us=x["median_s"] * 1e6, input_sets=x.get("input_sets")))
        point.query_sets = rotate
    prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": os.environ.get("GIT_COMMIT", "unknown")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cold_phases.json").write_text(json.dumps({"provenance": prov, "rows": res}, indent=1))
    print(f"{'B':>3} {'S':>7} {'Hkv':>3} {'r':>3} {'k':>5} {'way':18} {'sets':>4} | "
          + " ".join(f"{p[6:]:>8}" for p in PHASES) + " | sum/step")
    for B, S, Hkv in POINTS:
        for r, k in SETTINGS:
            k = k or S // 16
            for way in ("one query per set", "queries rotated"):
                t = {x["phase"]: x for x in res if (x["B"], x["S"], x["Hkv"], x["r"], x["k"], x["way"]) == (B, S, Hkv, r, k, way)}
                parts = sum(t[p]["us"] for p in PHASES[:3])
                print(f"{B:3} {S:7} {Hkv:3} {r:3} {k:5} {way:18} {t[P.SPARQ_DECODE]['input_sets'] or '':>4} | "
                      + " ".join(f"{t[p]['us']:8.1f}" for p in PHASES) + f" | {parts / t[P.SPARQ_DECODE]['us']:.2f}")


if __name__ == "__main__":
    main()
