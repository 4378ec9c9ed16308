"""Per-kernel time and DRAM bytes of one SparQ step and one dense step, read by Nsight
Compute's counters (each kernel alone, caches flushed before it, clocks left alone).

    ncu --profile-from-start off --clock-control none --csv --print-units base \\
        --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,\\
launch__grid_size,launch__block_size,launch__registers_per_thread \\
        python experiments/profile_step.py run > ncu.csv
    python experiments/profile_step.py table ncu.csv     (one line per kernel launch)

`run score` profiles instead the score kernel alone at B=1, S=32k (MHA) for each tile width
and grid size in SCORE_VARIANTS, in that order.

`run select` profiles instead the selection alone, once for each (rows, S, k) in
SELECT_SHAPES on fresh normal fp32 scores, each checked against torch.topk first; with
ncu's WarpStateStats, Occupancy and LaunchStats sections it says what the filter's warps
wait on (`-k regex:_filter_kernel`).

`run filter` profiles the SparQ step at FILTER_SHAPES with the defaults and then with the
selection's filter in the score kernel (SCORE_FILTER, a sample kernel before it).

`run` checks the SparQ step against the float64 reference first (batch element 0, with the
kernel's chosen positions), then profiles one step of each method at each shape.
"""
from __future__ import annotations

import csv
import sys

SHAPES = [(1, 32768, 32), (1, 32768, 8), (16, 32768, 32)]  # (B, S, H_kv), 32 query heads, d_h = 128
H_Q, D = 32, 128
SELECT_SHAPES = [(2048, 16384, 1024), (512, 32768, 2048), (32, 32768, 2048)]  # (rows, S, k)
SCORE_VARIANTS = [(1024, 8.0), (1024, 4.0), (512, 8.0), (1024, 16.0)]  # (BLOCK_S, SCORE_WAVES)


def run_score():
    import torch

    from sparq_perf.kernels import sparq as sp
    from sparq_perf.kernels.runners import phase_runners
    from sparq_perf.measure.point import _random_cache

    gen = torch.Generator(device="cuda").manual_seed(12)
    B, S, Hkv = 1, 32768, 32
    cache = _random_cache(B, Hkv, S, D, torch.bfloat16, gen)
    q = torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen)
    for block, waves in SCORE_VARIANTS:
        sp.BLOCK_S, sp.BLOCK_S_NARROW, sp.SCORE_WAVES = block, block, waves
        score = phase_runners("sparq", q, cache, r=16, k=S // 16, with_append=False)["sparq_score"]
        score()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        score()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print(f"score BLOCK_S={block} SCORE_WAVES={waves}", file=sys.stderr, flush=True)


def run_select():
    import torch

    from sparq_perf.kernels import topk_indices
    from sparq_perf.kernels.sparq import FilterWorkspace
    from sparq_perf.measure.point import same_topk

    gen = torch.Generator(device="cuda").manual_seed(13)
    for rows, S, k in SELECT_SHAPES:
        scores = torch.randn(rows, S, device="cuda", generator=gen)
        out = torch.full((rows, k), -1, dtype=torch.int32, device="cuda")
        ws = FilterWorkspace(rows, S, k, "cuda")
        for _ in range(2):  # the second call finds the counters the first left
            topk_indices(scores, k, out=out, ws=ws)
        if not same_topk(scores, out, k):
            raise RuntimeError(f"selection != torch.topk at rows={rows}, S={S}, k={k}")
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        topk_indices(scores, k, out=out, ws=ws)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        print(f"select rows={rows} S={S} k={k} (checked against torch.topk)", file=sys.stderr, flush=True)


def run():
    import torch

    from sparq_perf.kernels.runners import phase_runners
    from sparq_perf.measure.point import _random_cache, check_sparq_on_cache

    gen = torch.Generator(device="cuda").manual_seed(11)
    for B, S, Hkv in SHAPES:
        cache = _random_cache(B, Hkv, S, D, torch.bfloat16, gen)
        q = torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen)
        r, k = 16, S // 16
        sparq = phase_runners("sparq", q, cache, r=r, k=k, with_append=False)
        dense = phase_runners("dense", q, cache, with_append=False)
        err = check_sparq_on_cache(sparq, q, cache, r, k)
        print(f"B={B} S={S} Hkv={Hkv} r={r} k={k} check rel err {err:.2e}", file=sys.stderr, flush=True)
        for f in (sparq["sparq_decode"], dense["dense_decode"]):
            f()
            f()
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        sparq["sparq_decode"]()
        dense["dense_decode"]()
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        del cache, sparq, dense


FILTER_SHAPES = [(1, 32768, 32), (1, 131072, 32), (16, 32768, 32), (64, 4096, 32)]
FILTER_SETTINGS = dict(SCORE_FILTER=True, SAMPLE_RUN=64, SAMPLE_TILE=1024, SAMPLE_MIN_WARPS=4)


def run_filter():
    """`run filter`: the SparQ step at each of FILTER_SHAPES as the defaults run it, then
    with the filter in the score kernel (FILTER_SETTINGS: the sample kernel before it), each
    checked against the reference first."""
    import torch

    from sparq_perf.kernels import sparq as sp
    from sparq_perf.kernels.runners import phase_runners
    from sparq_perf.measure.point import _random_cache, check_sparq_on_cache

    gen = torch.Generator(device="cuda").manual_seed(13)
    defaults = {n: getattr(sp, n) for n in FILTER_SETTINGS}
    for B, S, Hkv in FILTER_SHAPES:
        cache = _random_cache(B, Hkv, S, D, torch.bfloat16, gen)
        q = torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen)
        r, k = 16, S // 16
        for settings in (defaults, FILTER_SETTINGS):
            for n, v in settings.items():
                setattr(sp, n, v)
            sparq = phase_runners("sparq", q, cache, r=r, k=k, with_append=False)
            err = check_sparq_on_cache(sparq, q, cache, r, k)
            print(f"B={B} S={S} Hkv={Hkv} score filter {sp.SCORE_FILTER}: check rel err {err:.2e}", file=sys.stderr,
                  flush=True)
            sparq["sparq_decode"]()
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            sparq["sparq_decode"]()
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            del sparq
        for n, v in defaults.items():
            setattr(sp, n, v)
        del cache


def table(path):
    """ncu's CSV (one row per kernel and metric) -> one line per launch, in launch order."""
    launches: dict[str, dict] = {}
    with open(path) as f:
        lines = [ln for ln in f if ln.startswith('"')]
    for row in csv.DictReader(lines):
        x = launches.setdefault(row["ID"], {"kernel": row["Kernel Name"].split("(")[0][:28]})
        x[row["Metric Name"]] = float(row["Metric Value"].replace(",", ""))
    print(f"{'kernel':28} {'grid':>7} {'block':>5} {'regs':>4} {'us':>8} {'MB read':>8} {'MB writ':>8} {'GB/s':>7}")
    for x in launches.values():
        us = x.get("gpu__time_duration.sum", 0.0) / 1e3
        rd, wr = x.get("dram__bytes_read.sum", 0.0), x.get("dram__bytes_write.sum", 0.0)
        print(f"{x['kernel']:28} {x.get('launch__grid_size', 0):7.0f} {x.get('launch__block_size', 0):5.0f} "
              f"{x.get('launch__registers_per_thread', 0):4.0f} {us:8.1f} {rd / 1e6:8.2f} {wr / 1e6:8.2f} "
              f"{(rd + wr) / max(us, 1e-9) / 1e3:7.0f}")


if __name__ == "__main__":
    if sys.argv[1:3] == ["run", "score"]:
        run_score()
    elif sys.argv[1:3] == ["run", "filter"]:
        run_filter()
    elif sys.argv[1:3] == ["run", "select"]:
        run_select()
    elif sys.argv[1:2] == ["run"]:
        run()
    elif sys.argv[1:2] == ["table"]:
        table(sys.argv[2])
    else:
        sys.exit(__doc__)
