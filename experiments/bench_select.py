"""Where the selection's time goes, on one GPU: the filter pass alone and the whole
selection (filter + pick), against torch.topk on the same fp32 scores, with each kernel's
registers and spills as compiled. Checks the result against torch.topk first.

    python experiments/bench_select.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import triton

from sparq_perf.kernels import sparq as sp
from sparq_perf.kernels._common import compiled_variants
from sparq_perf.measure.point import same_topk
from sparq_perf.measure.timing import sets_for_cold_l2, time_calls

SHAPES = [(2048, 16384, 1024), (2048, 16384, 128), (32, 32768, 2048), (32, 131072, 8192), (512, 32768, 2048)]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(5)
    res = []
    for rows, S, k in SHAPES:
        n_sets = min(4, sets_for_cold_l2(rows * S * 4))
        scores = [torch.randn(rows, S, device="cuda", generator=gen) for _ in range(n_sets)]
        wss = [sp.FilterWorkspace(rows, S, k, "cuda") for _ in scores]
        outs = [torch.full((rows, k), -1, dtype=torch.int32, device="cuda") for _ in scores]
        sp.topk_indices(scores[0], k, out=outs[0], ws=wss[0])
        assert same_topk(scores[0], outs[0], k), (rows, S, k)
        sp.filter_candidates(scores[0], wss[0])
        c = wss[0].count.clone()
        wss[0].reset()
        t_all = time_calls([(lambda s=s, o=o, w=w: sp.topk_indices(s, k, out=o, ws=w)) for s, o, w in zip(scores, outs, wss)])
        t_filter = time_calls([(lambda s=s, w=w: (sp.filter_candidates(s, w), w.reset())) for s, w in zip(scores, wss)])
        t_zero = time_calls([(lambda w=w: w.reset()) for w in wss])
        t_topk = time_calls([(lambda s=s: torch.topk(s, k, dim=-1, sorted=False)) for s in scores])
        row = dict(rows=rows, S=S, k=k, cap=wss[0].cap, slots=wss[0].slots, rank=wss[0].rank, n_sample=wss[0].n_sample,
                   count_min=int(c.min()), count_max=int(c.max()), select_us=t_all["median_s"] * 1e6,
                   filter_us=(t_filter["median_s"] - t_zero["median_s"]) * 1e6, zero_us=t_zero["median_s"] * 1e6,
                   topk_us=t_topk["median_s"] * 1e6)
        row["pick_us"] = row["select_us"] - row["filter_us"]
        res.append(row)
        print(" ".join(f"{a}={b:.1f}" if isinstance(b, float) else f"{a}={b}" for a, b in row.items()), flush=True)
    regs = {"filter": compiled_variants(sp._filter_kernel), "pick": compiled_variants(sp._pick_kernel)}
    print("registers, spills:", regs)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                "git_commit": os.environ.get("GIT_COMMIT", "unknown")}
        with open(Path(args.out) / "bench_select.json", "w") as f:
            json.dump({"provenance": prov, "rows": res, "registers_spills": regs}, f, indent=1)


if __name__ == "__main__":
    main()
