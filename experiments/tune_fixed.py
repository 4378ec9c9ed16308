"""Fixed costs where the rows are few, on one GPU: the dense kernel's grid and the
selection's kernels (the pick by bins or by bisection, the filter's tiles and warps, the
threshold's warps), and the kernels launched with programmatic dependent launch or not.

- dense: each (grid rule, waves, BLOCK_N) at each shape, checked against the float64
  reference first, timed beside torch SDPA on the same caches;
- selection alone on fp32 random scores with each pick variant, checked against torch.topk
  first, timed beside it;
- the whole SparQ step (1/8: r=16, k=S/16) with each pick variant, checked against the
  float64 reference of Algorithm 1 (batch element 0, the kernel's positions) and
  torch.topk first.
Inputs rotate over up to 4 sets, enough to cover 5x L2 where the working set is 3 MB or more
(smaller ones stay in L2 between calls); the step's queries rotate as in the kernel benchmark
(from bb39f97: before, one query a cache set found its rows of the call before in L2). The committed runs at fb61c1c, 191aca3 and 8dda7be
(reports/kernels/tune_fixed_*.json) also timed variants that the kernels had then
and no longer have (experiments/NOTES.md): the selection in one launch, the dense merge by
its last split program, the searches for the k-th largest by 16-bin histograms, the sure
threshold at few rows, and the score's and attend's tiles, warps and stages.

    python experiments/tune_fixed.py --out DIR [--parts select,step,dense] [--step-shapes "B,S,H_kv;..."]
Writes tune_fixed.json (every timed row) and prints the best settings per shape.
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
from sparq_perf import select_plan as plan
from sparq_perf.kernels import _common as cm
from sparq_perf.kernels import dense as dn
from sparq_perf.kernels import sparq as sp
from sparq_perf.kernels.reference import dense_reference
from sparq_perf.kernels.runners import phase_runners
from sparq_perf.measure.point import (CHECK_TOL, _random_cache, _rel_err, _sdpa, check_sparq_on_cache,
                                     measure_selection, query_sets)
from sparq_perf.measure.timing import sets_for_cold_l2, time_calls

H_Q, D = 32, 128
DENSE_SHAPES = [(1, 8192, 32), (1, 16384, 32), (1, 32768, 32), (1, 131072, 32), (1, 32768, 8), (8, 16384, 32),
                (16, 32768, 8), (64, 8192, 8)]
# (whole waves, waves, BLOCK_N): the rule before acdda27 (about `waves` waves, a part-filled
# last one; (False, 2.0, 128)) and at most whole waves of resident programs (one a SM at 128
# positions and 4 stages, two at 64; (True, 1.0, 128) is the kernels' default now)
# (the run at 1ab1979 timed them all; from c61d870 the default, with PDL and without)
DENSE_GRID = [(True, 1.0, 128)]
SELECT_SHAPES = [(32, 8192, 512), (32, 32768, 2048), (32, 32768, 128), (32, 131072, 8192), (8, 32768, 2048),
                 (132, 32768, 2048), (512, 4096, 256), (2048, 16384, 1024), (2048, 16384, 128)]
STEP_SHAPES = [(1, 32768, 32), (1, 131072, 32), (1, 8192, 32), (1, 32768, 8), (4, 32768, 8), (8, 16384, 32),
               (64, 4096, 32), (16, 32768, 32), (16, 32768, 8), (64, 8192, 8)]
# The run at 043170c timed the pick by bins against the bisection pick (since removed); at
# b16b0db the filter's tiles of 1024, 2048 (then the default) and 4096 keys, its warps, two
# tiles a program (since removed), the threshold's warps; at f23ebbc tiles of 512 keys. From c61d870: every kernel launched with
# programmatic dependent launch (the default where supported), the next kernel let launch
# after each program's main work (the default) or at its wait, or no PDL (USE_PDL False);
# at 27cf24e, the pick (or the threshold and the pick) without PDL at 0.5-4 rows per SM, and 2
# or 4 filter tiles a program (each loading its next tile before it counted the one before;
# since removed); at c3317c8 filter programs of 256, 512 and 1024 keys in one or two warps
# against 1024 in four (then the default; 512 in one taken); after it 512 in one (the default)
# against 1024 in four and one and 2048 in two (at 75d806f: 512 in one kept); after it, the
# threshold kernel's sample at 32 or 64 keys a thread from one warp up (16 from four: the
# default; not taken); after it, the filter's registers capped at 64, 72 and 80 a thread (at
# 2fa19be), then 72 and 80 with the candidates packed in one int64 (dd624de); after it, the
# bins by a branch on the row's rule (the default) or both rules computed (before dd624de);
# at 3b37989, the pick's bins loaded with its counts (now the rule) or after its scan, the
# pick's candidates a thread at few rows (8, 32), the top-r kernel's warps (1, 2), the merge by
# the attend's last split program for groups of up to 8 heads, the attend's stages (5, 7;
# triton 3.6 for sm_90 double-buffers its gathered K and V tiles from 5 stages, triple from 7;
# below 5, one tile in flight) and 4 waves of its programs where the rows are few: none taken;
# at b95876e the filter's and the pick's tiles loaded as vectors or one element a thread (the
# pick's taken), and the attend with a cap of 8 blocks a program where few (not taken); after
# it, the filter's one element a thread, the cap, and 5 attend stages; at 69946ca, the threshold
# kernel's two searches in shared rounds (taken) or one after the other, the attend's 5 stages
# where the rows are few and a program gathers 2 tiles or more (taken), 1 or more, or never, and
# the GQA score in one pass at up to 128 rows (each head's logits summed by the filter; since
# reverted) or two; at e310ef1, with 5 stages, the attend's 4 waves and caps of 8 and 4 blocks a
# program where the rows are few, and the score's 4 waves where they are many (none taken); at
# 3855a2a the selection's joint thresholds against the earlier code (the next kernel let launch
# after the lower threshold's search); then L2 between the passes over a row: the
# GQA score's second pass over its chunks last first, the K^T loads of its first pass kept
# (evict_last) and of the last pass evicted first, and the filter's tiles against the order the
# score wrote them (its last pass's policy then named SCORE_LAST_PASS_EVICT, since split into
# SCORE_ONE_PASS_EVICT and SCORE_SECOND_PASS_EVICT); at 37152f3 the thresholds found by the
# filter's programs up to 32, 128 and 512 rows (not taken);
# --pdl-variants adds PDL at the wait and off (the 3f3f7bf run's)
PDL_VARIANTS = [{}, {"PDL_LAUNCH_EARLY": True}, {"USE_PDL": False}]  # every kernel, dense too
# (at 3855a2a: the joint thresholds against one search after the other)
# (at cb2545b: the filter's writes by inline PTX (taken) or by tl.store / tl.atomic_add, and
# its tiles of 256 and 1024 keys a warp with them (not taken); after it, the PTX writes'
# addresses clamped to the room (no second predicate) and the sample read from the scores in
# runs of 16 keys (the default) or at every stride-th position; the pick's registers capped at
# 64 and its programs at 16 candidate slots a thread (twice the warps))
# (taken: the runs and the clamp; not: the pick's cap and its slots); after it (4bb4d63), the
# threshold kernel in one warp (32 or 64 sampled keys a thread), the filter's registers capped
# at 88 (its count before the PTX writes), and the pick's slots in one tile up to 16 rows an SM
# (at 260b73e: one warp taken where the sample has 256 keys, THRESH_ONE_WARP_MAX_SAMPLE; the
# rest not); at f0bca9c, the filter's tile as [rows, threads, vector], its keys numbered by one
# scan across the threads (FILTER_BY_THREADS, then the default) or 1-D (one scan a chunk), and
# with it tiles of 1024 keys a warp (neither taken: since reverted); at 668b088, fewer
# candidates: the sample's threshold rank at 4 or 3 sigmas of its spread (not 6), a sample of
# one key in 8 (not 16), and both (the candidates' room and the pick's slots kept as at 6;
# SAMPLE_SIGMAS then the ranks of both samples): 4 taken for the step's strided sample
# (select_plan.STRIDED_SIGMAS), the rest not
_ROW_KERNELS = []
SELECT_VARIANTS = [{}] + _ROW_KERNELS
# (at ed17d79 and a9f44b5, one query a cache set: the GQA second pass reversed, evict_last /
# evict_first on its passes, the filter against the score, each and together; at bb39f97, the
# queries rotated: g == 1's eviction and filter order each and together (taken together); at
# 37152f3 the thresholds found by the filter's programs, as for the selection)
# at 073e7d6 and d558a10: the filter in the score kernel, its thresholds from a sample kernel
# before it (SCORE_FILTER; the select phase then the pick alone, so the score and the select
# are also timed together), runs of 16 to 256 positions, tiles and warps of the sample kernel
# (not taken)
# (then, at 9f777db+, with runs of 64, the filtering score's registers capped at 96 and 72)
# (at cb2545b the PTX writes, the filter's tiles of 1024 keys and the score filter with runs of
# 64 (the PTX writes there too))
# (at 9575650: the pick's slots after the step's strided sample sized for its 4-sigma ranks
# (STRIDED_SLOTS, taken) or for the runs' 6, as before)
STEP_VARIANTS = [{}] + _ROW_KERNELS
ALL_VARIANTS = SELECT_VARIANTS + STEP_VARIANTS + PDL_VARIANTS[1:]


PDL_ALL = False  # --pdl-variants


def variants(base):
    """The variants to time: base, and with --pdl-variants PDL at the wait and off too."""
    return base + (PDL_VARIANTS[1:] if PDL_ALL else [])


def _owner(name):
    """The module a variant's setting lives in: the SparQ kernels', the selection plan's (a
    rule the cost model reads too) or the shared one."""
    return sp if hasattr(sp, name) else plan if hasattr(plan, name) else cm


STEP_DEFAULTS = {n: getattr(_owner(n), n) for n in {n for v in ALL_VARIANTS for n in v}}


def apply(cfg):
    for name, value in {**STEP_DEFAULTS, **cfg}.items():
        setattr(_owner(name), name, value)


def caches_and_queries(B, S, Hkv, gen):
    n = min(4, sets_for_cold_l2(2 * B * Hkv * S * D * 2))
    caches = [_random_cache(B, Hkv, S, D, torch.bfloat16, gen) for _ in range(n)]
    qs = [torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen) for _ in range(n)]
    return caches, qs


def tune_dense(gen, res):
    for B, S, Hkv in DENSE_SHAPES:
        caches, qs = caches_and_queries(B, S, Hkv, gen)
        ref = dense_reference(qs[0][0:1].double(), caches[0].K[0:1, :, :S].double(), caches[0].V[0:1, :, :S].double())
        t = time_calls([_sdpa(q, c) for q, c in zip(qs, caches)], target_s=0.05)
        base = dict(kind="dense", B=B, S=S, Hkv=Hkv)
        res.append(dict(base, config="sdpa", us=t["median_s"] * 1e6))
        defaults = dn.DENSE_WHOLE_WAVES, dn.DENSE_WAVES
        for (whole, waves, bn), pdl in ((g, v) for g in DENSE_GRID for v in variants([{}])):
            dn.DENSE_WHOLE_WAVES, dn.DENSE_WAVES = whole, waves
            apply(pdl)
            wss = [dn.DenseWorkspace(q, c, block_n=bn) for q, c in zip(qs, caches)]
            wss[0].out.fill_(float("nan"))
            err = _rel_err(dn.dense_attention(qs[0], caches[0], wss[0])[0:1], ref)
            if not err < CHECK_TOL:
                raise RuntimeError(f"dense off the reference ({err:.3g}) at {base} {whole, waves, bn}")
            t = time_calls([(lambda q=q, c=c, w=w: dn.dense_attention(q, c, w)) for q, c, w in zip(qs, caches, wss)],
                           target_s=0.05)
            res.append(dict(base, config=dict(whole=whole, waves=waves, block_n=bn, **pdl), splits=wss[0].n_splits,
                            us=t["median_s"] * 1e6, check_rel_err=err))
        dn.DENSE_WHOLE_WAVES, dn.DENSE_WAVES = defaults
        apply({})
        del caches, qs
        print("dense", B, S, Hkv, flush=True)


def tune_select(gen, res):
    for rows, S, k in SELECT_SHAPES:
        base = dict(kind="select", rows=rows, S=S, k=k)
        for cfg in variants(SELECT_VARIANTS):
            apply(cfg)
            # checked against torch.topk (twice on the same workspace), then both timed
            ours, topk = measure_selection(rows, S, k, max_sets=4, seed=21)  # the same scores for each variant
            sure = sp.uses_sure(S, k, min(S, sp.sample_size(S)), rows)
            res.append(dict(base, config=cfg, sure=sure, us=ours["median_s"] * 1e6))
            if not cfg:
                res.append(dict(base, config="torch.topk", us=topk["median_s"] * 1e6))
        apply({})
        print("select", rows, S, k, flush=True)


def tune_step(gen, res):
    for B, S, Hkv in STEP_SHAPES:
        r, k = 16, S // 16
        caches, qs = caches_and_queries(B, S, Hkv, gen)
        # more queries than cache sets, as the kernel benchmark (measure_point): a SparQ call
        # reads far less than a cache set, so one query on one set would find the r rows of K^T
        # and the k rows of K and V of the call before in L2 (the runs up to a9f44b5 did)
        n_q = query_sets(B, Hkv, S, D, 2, [(r, k)], len(caches), torch.cuda.mem_get_info()[0], sets_for_cold_l2)
        qs = qs + [torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen)
                   for _ in range(n_q - len(qs))]
        pairs = [(q, caches[i % len(caches)]) for i, q in enumerate(qs)]
        for cfg in variants(STEP_VARIANTS):
            apply(cfg)
            runs = [phase_runners("sparq", q, c, r=r, k=k, with_append=False) for q, c in pairs]
            err = check_sparq_on_cache(runs[0], qs[0], caches[0], r, k)
            for x in runs[1:]:  # each set's scores and indices made before the phases that read them are timed
                x[P.SPARQ_DECODE]()
            base = dict(kind="step", B=B, S=S, Hkv=Hkv, r=r, k=k, config=cfg, check_rel_err=err, queries=len(pairs),
                        attend_splits=runs[0].state.n_splits, score_chunks=runs[0].state.n_chunks)
            for phase in (P.SPARQ_DECODE, P.SPARQ_SCORE, P.SPARQ_SELECT, P.SPARQ_ATTEND, "score+select"):
                if phase in (P.SPARQ_SCORE, P.SPARQ_SELECT) and runs[0].state.score_filter:
                    # the pick alone would find its counters reset (searched from memory), the
                    # score alone the counters nothing reset (its stores masked past the room)
                    continue
                fns = [x[phase] if phase in x else (lambda x=x: (x[P.SPARQ_SCORE](), sp.sparq_select(x.state)))
                       for x in runs]
                t = time_calls(fns, target_s=0.05)
                res.append(dict(base, phase=phase, us=t["median_s"] * 1e6))
            del runs
        apply({})
        del caches, qs, pairs
        print("step", B, S, Hkv, flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/kernels")
    ap.add_argument("--parts", default="select,step,dense", help="which of select, step, dense to run")
    ap.add_argument("--step-shapes", default="", help="B,S,H_kv;... (default: STEP_SHAPES)")
    ap.add_argument("--pdl-variants", action="store_true", help="also PDL at the wait and PDL off (dense too)")
    args = ap.parse_args(argv)
    global PDL_ALL
    PDL_ALL = args.pdl_variants
    if args.step_shapes:
        STEP_SHAPES[:] = [tuple(int(v) for v in x.split(",")) for x in args.step_shapes.split(";")]
    gen = torch.Generator(device="cuda").manual_seed(21)
    res = []
    prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": os.environ.get("GIT_COMMIT", "unknown"), "sms": sp.num_sms()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"select": tune_select, "step": tune_step, "dense": tune_dense}
    for name in args.parts.split(","):
        parts[name](gen, res)
        regs = {kern: cm.compiled_variants(getattr(sp, kern)) for kern in ("_filter_kernel", "_pick_kernel", "_score_kernel", "_sample_kernel")}
        with open(out / "tune_fixed.json", "w") as f:  # after each part: what ran is kept if a later one does not
            json.dump({"provenance": prov, "rows": res, "registers_spills": regs}, f, indent=0)
    groups = {}
    for x in res:
        key = (x["kind"], x.get("B", x.get("rows")), x["S"], x.get("Hkv", x.get("k")), x.get("phase", ""))
        groups.setdefault(key, []).append(x)
    for key, xs in groups.items():
        ref = [x["us"] for x in xs if x["config"] in ("sdpa", "torch.topk")] or [x["us"] for x in xs if x["config"] == {}]
        best = sorted(xs, key=lambda x: x["us"])[:3]
        print(key, "ref/default %.1f" % ref[0] if ref else "", [(x["config"], round(x["us"], 1)) for x in best])


if __name__ == "__main__":
    main()
