"""How often the selection's sample misses (fewer than k keys above its threshold, or more
candidates than their room: the pick then searches the whole row) with the sample read
from the scores at every stride-th position or in runs of select_plan.SAMPLE_RUN_KEYS
consecutive ones, on rows of independent normal scores and of scores correlated along the
row (AR(1), unit variance). No GPU: the threshold as the kernels find it (the rank-th
largest sampled key; the kernels round it down to 16 bits, which only adds candidates).

    python experiments/sample_runs.py [--rows 2000] > reports/kernels/sample_runs.txt
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.signal import lfilter

from sparq_perf import select_plan as plan


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--S", type=int, default=16384)
    ap.add_argument("--k", type=int, default=1024)
    args = ap.parse_args(argv)
    S, k, rows = args.S, args.k, args.rows
    m = int(plan.sample_size(S))
    rank, run = int(plan.sample_rank(S, k, m)), int(plan.sample_run(S, m))
    cap = int(plan.pick_room(S, k, m, False, plan.SAMPLE_SIGMAS))
    stride = S // m
    i = np.arange(m)
    layouts = {"strided": i * stride, f"runs of {run}": (i // run) * run * stride + i % run}
    print(f"S={S} k={k} sample {m} keys, threshold at sampled rank {rank}, room {cap}; {rows} rows each")
    print("scores | " + " | ".join(f"{n}: miss %, median candidates" for n in layouts))
    rng = np.random.default_rng(0)
    for rho in (0.0, 0.5, 0.9, 0.99):
        x = rng.standard_normal((rows, S))
        if rho:
            x = lfilter([np.sqrt(1 - rho ** 2)], [1, -rho], x, axis=1)
        cells = []
        for pos in layouts.values():
            thr = -np.sort(-x[:, pos], axis=1)[:, rank - 1]
            c = (x >= thr[:, None]).sum(1)
            cells.append(f"{((c < k) | (c > cap)).mean() * 100:.2f}, {np.median(c):.0f}")
        print(f"{'independent' if not rho else f'AR(1) {rho}'} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
