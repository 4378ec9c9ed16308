"""Benchmark: evaluate 1,000,000 workload points of the analytic model in one vectorized call,
and build the default report (predictions only).

Targets: the points in at most 1 s on a 2-core machine (issue: cost model); the report in
under 10 s (as `sparq-perf report` builds it, with no measurements). Prints the median of 5 runs and
appends nothing: the figure goes to experiments/NOTES.md by hand with the machine it ran on.
Run: python experiments/bench_predict.py
"""
import platform
import statistics
import time

import numpy as np

from sparq_perf.hardware import get_profile
from sparq_perf.models import get_model
from sparq_perf.predict import evaluate


def grid():
    batch = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])[:, None, None, None]  # 10
    seq = np.unique(np.geomspace(1024, 1024 * 1024, 100).astype(np.int64))[None, :, None, None]  # 100
    r = np.array([4, 8, 12, 16, 24, 32, 48, 64, 96, 128])[None, None, :, None]  # 10
    k_frac = np.geomspace(1 / 256, 1 / 2, 100)[None, None, None, :]  # 100
    k = np.maximum(1, np.floor(seq * k_frac)).astype(np.int64)
    return batch, seq, r, k


def main():
    m, hw = get_model("llama3-8b"), get_profile("h100-sxm")
    batch, seq, r, k = grid()
    n = np.broadcast_shapes(batch.shape, seq.shape, r.shape, k.shape)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        ev = evaluate(m, hw, batch=batch, seq_len=seq, r=r, k=k)
        speedup = ev.summary["sparq.speedup_step"]
        times.append(time.perf_counter() - t0)
    points = int(np.prod(n))
    print(f"{points:,} points ({n}) in {statistics.median(times):.3f} s median of 5 "
          f"(min {min(times):.3f} s) on {platform.processor() or platform.machine()}, {platform.python_version()}, "
          f"numpy {np.__version__}; speedup range {speedup.min():.2f}x..{speedup.max():.2f}x")


    try:
        from sparq_perf.report import build as B
        from sparq_perf.report.grid import grid_rows
    except ImportError:  # plotly not installed: the report is not timed
        return
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = B.build_report(grid_rows(), [], Path(tmp) / "index.html")
        took = time.perf_counter() - t0
        print(f"default report built in {took:.2f} s, {out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
