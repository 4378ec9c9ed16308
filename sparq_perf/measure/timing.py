"""The one timing helper: CUDA-graph replay (or CUDA events), warm-up, many repeats.

Results are seconds: median and 20th/80th percentiles of the time of one call.
Cold L2: pass several callables working on different input sets (enough that together
they exceed ~5x the L2); each replay runs them in turn and its time is divided by their
number, so no call finds its inputs left in L2 by the previous one.

Short calls: a graph replay costs a few microseconds of launch on the GPU itself, which a
decode step captured whole (as servers run it) pays once for all its kernels, not once per
kernel. So a graph holds the round of calls repeated until one replay lasts at least
MIN_REPLAY_S, and the time per call is the replay's time over all the calls it holds.
"""
from __future__ import annotations

import math
import statistics

import torch

MIN_REPLAY_S = 100e-6  # a replay's length: its launch, ~3-5 us, stays under ~5% of it
MAX_ROUNDS_PER_REPLAY = 64


def l2_bytes(device=None) -> int:
    props = torch.cuda.get_device_properties(device or torch.cuda.current_device())
    return int(getattr(props, "L2_cache_size", 50 * 2**20))


def sets_for_cold_l2(working_set_bytes: float, max_sets: int = 8, factor: float = 5.0) -> int:
    """Input sets to rotate among so that they cover `factor` x L2 (1 when one set does)."""
    need = factor * l2_bytes() / max(working_set_bytes, 1.0)
    return max(1, min(max_sets, math.ceil(need)))


def _summary(times_s, n_calls):
    per_call = sorted(t / n_calls for t in times_s)
    q = statistics.quantiles(per_call, n=10, method="inclusive") if len(per_call) > 1 else per_call * 9
    return {"median_s": statistics.median(per_call), "p20_s": q[1], "p80_s": q[7], "repeats": len(per_call)}


def time_calls(fns, use_graph: bool = True, warmup: int = 3, min_repeats: int = 30, target_s: float = 0.25):
    """Time `fns` (one callable, or one per input set, run in turn) -> dict of seconds per call.

    use_graph: capture rounds of the calls in a CUDA graph (as many as make a replay last
    MIN_REPLAY_S) and time its replays, as a server replays a decode step: no launch gaps
    from Python; otherwise time eager calls with CUDA events.
    """
    fns = list(fns) if isinstance(fns, (list, tuple)) else [fns]
    n = len(fns)

    def one_round():
        for f in fns:
            f()

    for _ in range(warmup):  # compiles and loads the kernels, outside the graph
        one_round()
    torch.cuda.synchronize()
    rounds = 1
    run = one_round
    if use_graph:
        run = _graph_of(one_round, 1, warmup)
        rounds = max(1, min(MAX_ROUNDS_PER_REPLAY, math.ceil(MIN_REPLAY_S / _estimate_s(run))))
        if rounds > 1:
            run = _graph_of(one_round, rounds, warmup)
    est_s = _estimate_s(run)
    repeats = max(min_repeats, min(2000, int(target_s / est_s)))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for s, e in events:
        s.record()
        run()
        e.record()
    torch.cuda.synchronize()
    out = _summary([s.elapsed_time(e) / 1e3 for s, e in events], n * rounds)
    out["graph"] = use_graph
    out["input_sets"] = n
    out["rounds_per_replay"] = rounds
    return out


def _graph_of(one_round, rounds: int, warmup: int):
    """A CUDA graph of `rounds` rounds of the calls, warmed up: returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        one_round()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(rounds):
            one_round()
    for _ in range(warmup):
        graph.replay()
    return graph.replay


def _estimate_s(run) -> float:
    """Seconds of one run, from three in a row."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        run()
    end.record()
    torch.cuda.synchronize()
    return max(start.elapsed_time(end) / 3e3, 1e-7)


def copy_bandwidth_bytes_per_s(n_bytes: int = 2 * 2**30) -> dict:
    """Device-to-device copy of n_bytes (>= 1 GB): (bytes read + bytes written) / median time."""
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device="cuda").normal_()
    dst = torch.empty_like(src)
    t = time_calls(lambda: dst.copy_(src), use_graph=False, min_repeats=20, target_s=0.5)
    del src, dst
    return {**t, "bytes": 2 * n_bytes, "bytes_per_s": 2 * n_bytes / t["median_s"]}


def matmul_flops_per_s(n: int = 8192) -> dict:
    """bf16 n x n x n matrix product on random data: 2 n^3 / median time."""
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    c = torch.empty(n, n, dtype=torch.bfloat16, device="cuda")
    t = time_calls(lambda: torch.matmul(a, b, out=c), use_graph=False, min_repeats=10, target_s=0.5)
    return {**t, "flops": 2.0 * n**3, "flops_per_s": 2.0 * n**3 / t["median_s"]}
