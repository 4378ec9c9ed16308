"""Where one SparQ step's time goes between its kernels: a timeline of the step as a server
replays it (a CUDA graph, PDL on where the GPU has it), read from the kernels' start and end
times that PyTorch's profiler records (CUPTI).

    python experiments/step_timeline.py [--out FILE] [--shapes "B,S,H_kv;..."] [--score-filter]

(--score-filter: with the selection's filter in the score kernel, kernels.sparq.SCORE_FILTER.)

For each shape in SHAPES (32 query heads, d_h = 128, bf16, SparQ at 1/8: r = 16, k = S/16):
the step is checked against the float64 reference (batch element 0, with the kernel's chosen
positions), then a graph of ROUNDS steps over input sets that rotate (as the benchmark does,
so no step finds its inputs in L2) is replayed under the profiler. Per kernel of the step, the
median over the steps of: its start after the step's first kernel started, its duration, and
the gap from the end of the kernel before it in the step (negative: they overlapped, as PDL
lets them; 0 for the first).
The step's time without the profiler (CUDA events over replays) is printed beside it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

import torch
import triton

from sparq_perf import phases as P
from sparq_perf.kernels.runners import phase_runners
from sparq_perf.measure.point import _random_cache, check_sparq_on_cache
from sparq_perf.measure.timing import sets_for_cold_l2, time_calls

SHAPES = [(1, 32768, 32), (1, 32768, 8), (16, 32768, 32), (16, 32768, 8)]  # (B, S, H_kv); GQA B=16: its two passes apart
H_Q, D = 32, 128
ROUNDS = 8  # steps per replay
REPLAYS = 20  # replays traced


def kernel_events(trace_path):
    """(name, start us, end us) of every GPU kernel in a Chrome trace, in start order."""
    with open(trace_path) as f:
        events = json.load(f)["traceEvents"]
    ks = [(e["name"].split("(")[0], float(e["ts"]), float(e["ts"]) + float(e["dur"]))
          for e in events if e.get("cat") == "kernel"]
    return sorted(ks, key=lambda x: x[1])


def split_steps(kernels, n_steps):
    """The kernel list (in start order) cut into n_steps steps of equally many kernels."""
    if not kernels or len(kernels) % n_steps:
        raise RuntimeError(f"{len(kernels)} kernels traced, not a whole number for each of {n_steps} steps")
    per = len(kernels) // n_steps
    return [kernels[i:i + per] for i in range(0, len(kernels), per)]


def timeline(steps):
    """Per kernel position of the steps that have the most common kernel sequence: medians of
    its start (after the step's first start), duration and gap from the previous kernel's end."""
    names = statistics.mode([tuple(k[0] for k in s) for s in steps])
    same = [s for s in steps if tuple(k[0] for k in s) == names]
    if len(same) < len(steps):
        print(f"  ({len(steps) - len(same)} of {len(steps)} steps ran their kernels in another order: left out)")
    rows = []
    for i, name in enumerate(names):
        start = [s[i][1] - s[0][1] for s in same]
        dur = [s[i][2] - s[i][1] for s in same]
        gap = [s[i][1] - s[i - 1][2] for s in same] if i else [0.0]
        rows.append(dict(kernel=name, start_us=statistics.median(start), dur_us=statistics.median(dur),
                         gap_us=statistics.median(gap)))
    span = [max(k[2] for k in s) - s[0][1] for s in same]
    return rows, statistics.median(span), len(same)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--score-filter", action="store_true", help="the filter in the score kernel (one head per group)")
    ap.add_argument("--shapes", default="", help="B,S,H_kv;... (default: SHAPES)")
    args = ap.parse_args(argv)
    from sparq_perf.kernels import sparq as sp
    sp.SCORE_FILTER = args.score_filter
    shapes = [tuple(int(v) for v in x.split(",")) for x in args.shapes.split(";")] if args.shapes else SHAPES
    gen = torch.Generator(device="cuda").manual_seed(17)
    res = []
    for B, S, Hkv in shapes:
        r, k = 16, S // 16
        n_sets = sets_for_cold_l2(B * Hkv * S * (r + 2 * D * k / S) * 2, max_sets=4)
        caches = [_random_cache(B, Hkv, S, D, torch.bfloat16, gen) for _ in range(n_sets)]
        qs = [torch.randn(B, H_Q, D, dtype=torch.bfloat16, device="cuda", generator=gen) for _ in caches]
        runs = [phase_runners("sparq", q, c, r=r, k=k, with_append=False) for q, c in zip(qs, caches)]
        err = check_sparq_on_cache(runs[0], qs[0], caches[0], r, k)
        steps = [x[P.SPARQ_DECODE] for x in runs]
        t = time_calls(steps, target_s=0.1)
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for f in steps:
                f()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            for i in range(ROUNDS):
                steps[i % len(steps)]()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(REPLAYS):
                graph.replay()
            torch.cuda.synchronize()
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "trace.json")
            prof.export_chrome_trace(path)
            kernels = kernel_events(path)
        rows, span, n = timeline(split_steps(kernels, REPLAYS * ROUNDS))
        res.append(dict(B=B, S=S, Hkv=Hkv, r=r, k=k, check_rel_err=err, step_us=t["median_s"] * 1e6,
                        span_us=span, steps_traced=n, kernels=rows))
        print(f"B={B} S={S} H_kv={Hkv}: step {t['median_s'] * 1e6:.1f} us (events), traced span {span:.1f} us "
              f"over {n} steps, check {err:.1e}")
        print(f"  {'kernel':24} {'start':>7} {'dur':>7} {'gap':>7}  (us)")
        for x in rows:
            print(f"  {x['kernel'][:24]:24} {x['start_us']:7.1f} {x['dur_us']:7.1f} {x['gap_us']:7.1f}")
        del caches, qs, runs, graph
        torch.cuda.empty_cache()
    if args.out:
        prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                "git_commit": os.environ.get("GIT_COMMIT", "unknown"), "score_filter": args.score_filter}
        with open(args.out, "w") as f:
            json.dump({"provenance": prov, "shapes": res}, f, indent=1)


if __name__ == "__main__":
    main()
