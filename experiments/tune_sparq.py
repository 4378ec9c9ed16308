"""Tile and grid sweep of the SparQ score, selection and attend kernels on one GPU.

For each shape and configuration: the whole SparQ step is checked against the float64
reference (batch element 0, with the kernel's chosen positions) and the selection against
torch.topk, then the phase is timed (CUDA graphs, median); the whole step with each
selection variant too. Selection alone is also swept on fp32 random scores against
torch.topk. Attend's merge (by its last program or by a launch of its own) is compared on
the whole SparQ step with --merge.

    python experiments/tune_sparq.py --out reports/kernels [--score | --score-gqa] [--attend] [--merge]
Writes tune_sparq.json; prints the three best configurations per shape and phase.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
from pathlib import Path

import torch
import triton

from sparq_perf import phases as P
from sparq_perf.kernels import sparq as sp
from sparq_perf.kernels.runners import phase_runners
from sparq_perf.measure.point import _random_cache, check_sparq_on_cache, query_sets, same_topk
from sparq_perf.measure.timing import sets_for_cold_l2, time_calls

H_Q, D = 32, 128
SHAPES = [(1, 32768, 32), (1, 131072, 32), (8, 16384, 32), (16, 32768, 32), (64, 4096, 32), (1, 32768, 8),
          (16, 32768, 8), (64, 8192, 8)]
SELECT_ALONE = [(2048, 16384), (32, 32768), (32, 131072)]
SCORE_GRID = dict(SCORE_TOPR_KERNEL=(False, True), SCORE_FMA=(False, True), BLOCK_S=(512, 1024), SCORE_WAVES=(4.0, 8.0),
                  SCORE_WARPS=(4, 8))
# selection: the default, then one group of settings changed at a time
SELECT_VARIANTS = [{}, {"SURE_THRESHOLD": False}]
# attend: one set of waves for every shape (ATTEND_WAVES_FEW follows ATTEND_WAVES here)
ATTEND_GRID = dict(BLOCK_K=(32, 64), ATTEND_WARPS=(4, 8), ATTEND_WAVES=(2.0, 4.0, 8.0))
MERGE_VARIANTS = [{"FUSED_MERGE_MAX_G": 0}, {"FUSED_MERGE_MAX_G": 8}]  # a merge launch always; the last program always
DEFAULTS = {name: getattr(sp, name) for name in [*SCORE_GRID, *ATTEND_GRID, "ATTEND_WAVES_FEW",
                                                   *{n for v in SELECT_VARIANTS + MERGE_VARIANTS for n in v}]}


def configs(grid):
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


def apply(cfg):
    if "ATTEND_WAVES" in cfg:
        cfg = {**cfg, "ATTEND_WAVES_FEW": cfg["ATTEND_WAVES"]}
    for name, value in {**DEFAULTS, **cfg}.items():
        setattr(sp, name, value)


def sweep_step(B, S, Hkv, gen, res, with_score, with_attend, with_merge):
    r, k = 16, S // 16
    n_sets = min(4, sets_for_cold_l2(3 * B * Hkv * S * D * 2))
    caches = [_random_cache(B, Hkv, S, D, torch.bfloat16, gen) for _ in range(n_sets)]
    # queries rotated over the cache sets as measure does (measure.point.query_sets)
    n_q = query_sets(B, Hkv, S, D, 2, [(r, k)], n_sets, torch.cuda.mem_get_info()[0], sets_for_cold_l2)
    qs = [torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen) for _ in range(n_q)]
    caches = [caches[i % n_sets] for i in range(n_q)]
    # one head per group scores with BLOCK_S (FMA or not); g > 1 with BLOCK_S_NARROW, never FMA
    score_cfgs = [c for c in configs(SCORE_GRID) if Hkv == H_Q or (not c["SCORE_FMA"] and c["BLOCK_S"] == 512)]
    if with_score == "gqa" and Hkv == H_Q:
        score_cfgs = []
    attend_cfgs = configs(ATTEND_GRID)
    trials = ([(P.SPARQ_SCORE, c) for c in score_cfgs if with_score] + [(P.SPARQ_SELECT, c) for c in SELECT_VARIANTS]
              + [(P.SPARQ_ATTEND, c) for c in attend_cfgs if with_attend]
              + [(P.SPARQ_DECODE, c) for c in SELECT_VARIANTS + (MERGE_VARIANTS if with_merge else [])])
    for name, cfg in trials:
        apply(cfg)
        runs = [phase_runners("sparq", q, c, r=r, k=k, with_append=False) for q, c in zip(qs, caches)]
        err = check_sparq_on_cache(runs[0], qs[0], caches[0], r, k)
        if name in (P.SPARQ_SELECT, P.SPARQ_ATTEND):  # they read each set's scores and indices: made first
            for x in runs[1:]:
                x[P.SPARQ_SCORE]()
                x[P.SPARQ_SELECT]()
        t = time_calls([x[name] for x in runs], target_s=0.05)
        res.append(dict(kind="step", B=B, S=S, Hkv=Hkv, r=r, k=k, phase=name, config=cfg, us=t["median_s"] * 1e6,
                        check_rel_err=err))
        del runs
    apply({})
    del caches


def sweep_select(rows, S, gen, res):
    scores = [torch.randn(rows, S, device="cuda", generator=gen) for _ in range(min(4, sets_for_cold_l2(rows * S * 4)))]
    for k in (S // 16, S // 4, 128):
        t = time_calls([(lambda s=s: torch.topk(s, k, dim=-1, sorted=False)) for s in scores], target_s=0.05)
        res.append(dict(kind="select", rows=rows, S=S, k=k, config="torch.topk", us=t["median_s"] * 1e6))
        for cfg in SELECT_VARIANTS:
            apply(cfg)
            outs = [torch.empty(rows, k, dtype=torch.int32, device="cuda") for _ in scores]
            wss = [sp.FilterWorkspace(rows, S, k, "cuda") for _ in scores]
            outs[0].fill_(-1)
            sp.topk_indices(scores[0], k, out=outs[0], ws=wss[0])
            if not same_topk(scores[0], outs[0], k):
                raise RuntimeError(f"selection != torch.topk at {rows}x{S} k={k} {cfg}")
            t = time_calls([(lambda s=s, o=o, w=w: sp.topk_indices(s, k, out=o, ws=w)) for s, o, w in zip(scores, outs, wss)],
                           target_s=0.05)
            res.append(dict(kind="select", rows=rows, S=S, k=k, config=cfg, us=t["median_s"] * 1e6))
        apply({})


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/kernels")
    ap.add_argument("--score", action="store_const", const="all", help="also sweep the score kernel's tiles")
    ap.add_argument("--score-gqa", dest="score", action="store_const", const="gqa", help="... at g > 1 only")
    ap.add_argument("--attend", action="store_true", help="also sweep the attend kernel's tiles and grid")
    ap.add_argument("--merge", action="store_true", help="also time the step with each way of merging attend's splits")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator(device="cuda").manual_seed(3)
    res = []
    for rows, S in SELECT_ALONE:
        sweep_select(rows, S, gen, res)
        print("select", rows, S, flush=True)
    for B, S, Hkv in SHAPES:
        sweep_step(B, S, Hkv, gen, res, args.score, args.attend, args.merge)
        print("step", B, S, Hkv, flush=True)
    prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": os.environ.get("GIT_COMMIT", "unknown"), "defaults": DEFAULTS}
    with open(out / "tune_sparq.json", "w") as f:
        json.dump({"provenance": prov, "rows": res}, f, indent=0)
    groups = {}
    for x in res:
        key = (x["kind"], x.get("B", x.get("rows")), x["S"], x.get("Hkv", ""), x.get("phase", x.get("k")))
        groups.setdefault(key, []).append(x)
    for key, xs in groups.items():
        best = sorted(xs, key=lambda x: x["us"])[:3]
        base = [x["us"] for x in xs if x["config"] == "torch.topk"]
        print(key, "topk %.0f" % base[0] if base else "", [(x["config"], round(x["us"], 1)) for x in best])


if __name__ == "__main__":
    main()
