"""The selection with and without its sure threshold, by row count, where select_plan
could use one: which way is faster at each (rows, S, k). Scores random fp32, the sample
taken as the score kernel writes it; checked against torch.topk first.

    python experiments/sure_rows.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import triton

from sparq_perf.kernels import sparq as sp
from sparq_perf.measure.point import same_topk
from sparq_perf.measure.timing import sets_for_cold_l2, time_calls

ROWS = [8, 32, 64, 128, 256, 512, 2048]
LENGTHS = [(32768, 8192), (65536, 8192), (131072, 8192), (65536, 16384), (131072, 16384)]


def timed(rows, S, k, sure, gen):
    sp.SURE_THRESHOLD = sure
    n_sets = min(4, sets_for_cold_l2(rows * S * 4))
    scores = [torch.randn(rows, S, device="cuda", generator=gen) for _ in range(n_sets)]
    wss = [sp.FilterWorkspace(rows, S, k, "cuda") for _ in scores]
    for s, w in zip(scores, wss):
        w.sample.copy_(s[:, w.strided_positions()])
    outs = [torch.full((rows, k), -1, dtype=torch.int32, device="cuda") for _ in scores]
    sp.topk_indices(scores[0], k, out=outs[0], ws=wss[0], sampled=True)
    if not same_topk(scores[0], outs[0], k):
        raise RuntimeError(f"selection != torch.topk at rows={rows} S={S} k={k} sure={sure}")
    t = time_calls([(lambda s=s, o=o, w=w: sp.topk_indices(s, k, out=o, ws=w, sampled=True))
                    for s, o, w in zip(scores, outs, wss)])
    return t["median_s"], wss[0].sure


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(11)
    res = []
    for S, k in LENGTHS:
        for rows in ROWS:
            if rows * S * 4 * 4 > 8e9:
                continue
            t_no, _ = timed(rows, S, k, False, gen)
            t_yes, _ = timed(rows, S, k, True, gen)
            sp.SURE_THRESHOLD = None
            rule = sp.uses_sure(S, k, sp.sample_size(S), rows)
            row = dict(rows=rows, S=S, k=k, rule_sure=rule, without_us=t_no * 1e6, with_us=t_yes * 1e6)
            res.append(row)
            print(" ".join(f"{a}={b:.1f}" if isinstance(b, float) else f"{a}={b}" for a, b in row.items()), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                "git_commit": os.environ.get("GIT_COMMIT", "unknown")}
        with open(Path(args.out) / "sure_rows.json", "w") as f:
            json.dump({"provenance": prov, "rows": res}, f, indent=1)


if __name__ == "__main__":
    main()
