"""How often the selection's sample misses (fewer than k keys above its threshold, or more
candidates than their room: the pick then searches the whole row) with the sample read
from the scores at every stride-th position or in runs of select_plan.SAMPLE_RUN_KEYS
consecutive ones, on rows of independent normal scores and of scores correlated along the
row (AR(1), unit variance). No GPU: the threshold as the kernels find it (the rank-th
largest sampled key; the kernels round it down to 16 bits, which only adds candidates).

    python experiments/sample_runs.py [--rows 2000] > reports/kernels/sample_runs.txt
    python experiments/sample_runs.py --sigmas 4 --stride 8   # a threshold rank at 4 sigmas, one key in 8

With --sigmas the room stays as the kernels size it at select_plan.SAMPLE_SIGMAS (as
experiments/tune_fixed.py times such a variant); the binomial tail of the rank is also printed.
"""
from __future__ import annotations

import argparse

import numpy as np
from scipy.signal import lfilter
from scipy.stats import hypergeom

from sparq_perf import select_plan as plan


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--S", type=int, default=16384)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--sigmas", type=float, default=plan.SAMPLE_SIGMAS, help="the threshold rank's sigmas")
    ap.add_argument("--stride", type=int, default=plan.SAMPLE_STRIDE, help="one sampled key in this many")
    args = ap.parse_args(argv)
    S, k, rows = args.S, args.k, args.rows
    m = int(plan.sample_size(S, stride=args.stride))
    rank, run = int(plan.sample_rank(S, k, m, args.sigmas)), int(plan.sample_run(S, m))
    cap = int(plan.pick_room(S, k, m, False, plan.SAMPLE_SIGMAS))  # the room as the kernels size it
    stride = S // m
    i = np.arange(m)
    layouts = {"strided": i * stride, f"runs of {run}": (i // run) * run * stride + i % run}
    print(f"S={S} k={k} sample {m} keys, threshold at sampled rank {rank} ({args.sigmas:g} sigmas), room {cap}; "
          f"{rows} rows each")
    # independent scores: the sample misses where `rank` or more of its keys lie in the top k
    # (a hypergeometric tail: S keys, k of them in the top k, m drawn)
    print(f"P(miss) a row on independent scores, from the tail: {hypergeom.sf(rank - 1, S, k, m):.2g}")
    print("scores | " + " | ".join(f"{n}: miss %, median candidates" for n in layouts))
    rng = np.random.default_rng(0)
    for rho in (0.0, 0.5, 0.9, 0.99):
        counts = {name: [] for name in layouts}
        for start in range(0, rows, 1000):  # 1000 rows at a time: 64 MB of scores at 16k
            x = rng.standard_normal((min(1000, rows - start), S))
            if rho:
                x = lfilter([np.sqrt(1 - rho ** 2)], [1, -rho], x, axis=1)
            for name, pos in layouts.items():
                thr = -np.sort(-x[:, pos], axis=1)[:, rank - 1]
                counts[name].append((x >= thr[:, None]).sum(1))
        cells = []
        for c in (np.concatenate(v) for v in counts.values()):
            cells.append(f"{((c < k) | (c > cap)).mean() * 100:.2f}, {np.median(c):.0f}")
        print(f"{'independent' if not rho else f'AR(1) {rho}'} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
