"""Benchmark of the decode kernels on one GPU (issue shapes): SDPA, our dense, our SparQ.

Achieved GB/s use the project's cost model (sparq_perf.cost.attention) for the bytes;
ideal speedup is the paper's M_dense / M_sparq (sparq_perf.cost.paper); achieved speedup
is min(t_SDPA, t_dense) / t_sparq, append excluded from both.

    python experiments/bench_kernels.py --out reports/kernels [--quick]
Writes kernels.csv / kernels.json (every timed row) and selection rows, prints a table.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import torch
import triton

from sparq_perf import phases as P
from sparq_perf.cost import paper
from sparq_perf.cost.attention import DenseImpl, SparqImpl, attention_costs
from sparq_perf.measure.point import measure_point, measure_selection
from sparq_perf.measure.timing import copy_bandwidth_bytes_per_s, matmul_flops_per_s
from sparq_perf.workload import Workload

H_Q, D_HEAD = 32, 128
MHA = [(1, 8192), (1, 16384), (1, 32768), (1, 131072), (8, 16384), (64, 4096), (16, 32768)]
GQA = [(1, 32768), (16, 32768), (64, 8192)]
SELECT_SHAPES = [(2048, 16384)]


def settings(S):
    return [(16, S // 16), (32, S // 8), (32, 128)]  # 1/8, 1/4, the paper's micro-benchmark


def sparq_impl(g):
    # K^T read once (g == 1) or twice (g > 1: statistics pass, then group-summed s_hat); the
    # selection's passes follow the kernels' choice of path (SparqImpl's defaults)
    return SparqImpl(scores_in_memory=True, score_launches=1 if g == 1 else 2)


def model_bytes(method, B, S, Hkv, r=16, k=128):
    w = Workload(batch=B, seq_len=S, n_heads=H_Q, n_kv_heads=Hkv, d_head=D_HEAD, r=r, k=k, l=0, kv_bytes=2, act_bytes=2)
    if method == "dense":
        c = attention_costs("dense", w, DenseImpl())
        return float(c[P.DENSE_ATTENTION].bytes)
    c = attention_costs("sparq", w, sparq_impl(H_Q // Hkv))
    return {ph: float(c[ph].bytes) for ph in P.SPARQ_PHASES}


def sweep_dense(out):
    """Median time of our dense kernel per (BLOCK_N, num_warps, num_stages) at three shapes."""
    from sparq_perf.kernels.dense import DenseWorkspace, dense_attention
    from sparq_perf.measure.point import _random_cache
    from sparq_perf.measure.timing import time_calls

    gen = torch.Generator(device="cuda").manual_seed(1)
    res = []
    for B, S, Hkv in [(1, 32768, 32), (16, 32768, 32), (1, 8192, 32), (64, 8192, 8)]:
        c = _random_cache(B, Hkv, S, D_HEAD, torch.bfloat16, gen)
        q = torch.randn(B, H_Q, D_HEAD, dtype=torch.bfloat16, device="cuda", generator=gen)
        for bn in (32, 64, 128):
            ws = DenseWorkspace(q, c, block_n=bn)
            for nw in (4, 8):
                for ns in (2, 3, 4):
                    t = time_calls(lambda: dense_attention(q, c, ws, num_warps=nw, num_stages=ns), target_s=0.1)
                    res.append(dict(B=B, S=S, Hkv=Hkv, block_n=bn, num_warps=nw, num_stages=ns, us=t["median_s"] * 1e6))
        del c
        best = sorted((r for r in res if (r["B"], r["S"], r["Hkv"]) == (B, S, Hkv)), key=lambda r: r["us"])[:3]
        print("sweep", B, S, Hkv, [(r["block_n"], r["num_warps"], r["num_stages"], round(r["us"], 1)) for r in best], flush=True)
    with open(out / "dense_sweep.json", "w") as f:
        json.dump(res, f, indent=0)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="reports/kernels")
    ap.add_argument("--quick", action="store_true", help="two shapes only")
    ap.add_argument("--sweep", action="store_true", help="also time dense tile configurations")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prov = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
        "python": platform.python_version(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": os.environ.get("GIT_COMMIT", "unknown"), "command": " ".join([sys.executable] + sys.argv),
    }
    copy = copy_bandwidth_bytes_per_s()
    mm = matmul_flops_per_s()
    prov["copy_bytes_per_s"] = copy["bytes_per_s"]
    prov["matmul_flops_per_s"] = mm["flops_per_s"]
    print(f"copy {copy['bytes_per_s']/1e9:.0f} GB/s, bf16 matmul {mm['flops_per_s']/1e12:.0f} TFLOP/s", flush=True)
    if args.sweep:
        sweep_dense(out)
    shapes = [(B, S, H_Q) for B, S in MHA] + [(B, S, 8) for B, S in GQA]
    if args.quick:
        shapes = [(1, 32768, H_Q), (1, 32768, 8)]
    rows, summary = [], []
    for B, S, Hkv in shapes:
        pts = measure_point(B, S, H_Q, Hkv, D_HEAD, sparq_settings=settings(S))
        for row in pts:
            row.update(prov_commit=prov["git_commit"])
        rows += pts
        t = {(x["method"], x["phase"], x["r"], x["k"]): x["median_s"] for x in pts}
        t_sdpa, t_dense = t[("sdpa", P.DENSE_DECODE, None, None)], t[("dense", P.DENSE_DECODE, None, None)]
        dbytes = model_bytes("dense", B, S, Hkv)
        line = dict(B=B, S=S, Hkv=Hkv, sdpa_us=t_sdpa * 1e6, dense_us=t_dense * 1e6,
                    sdpa_GBps=dbytes / t_sdpa / 1e9, dense_GBps=dbytes / t_dense / 1e9,
                    dense_vs_sdpa=t_sdpa / t_dense, dense_vs_copy=dbytes / t_dense / copy["bytes_per_s"])
        for r, k in settings(S):
            sb = model_bytes("sparq", B, S, Hkv, r, k)
            ts = t[("sparq", P.SPARQ_DECODE, r, k)]
            ideal = float(paper.dense_elements(S, D_HEAD) / paper.sparq_elements(S, D_HEAD, r, k))
            tag = f"r{r}k{k}"
            line.update({
                f"{tag}_us": ts * 1e6, f"{tag}_GBps": sum(sb.values()) / ts / 1e9,
                f"{tag}_speedup": min(t_sdpa, t_dense) / ts, f"{tag}_ideal": ideal,
                f"{tag}_frac_ideal": min(t_sdpa, t_dense) / ts / ideal,
                f"{tag}_score_us": t[("sparq", P.SPARQ_SCORE, r, k)] * 1e6,
                f"{tag}_select_us": t[("sparq", P.SPARQ_SELECT, r, k)] * 1e6,
                f"{tag}_attend_us": t[("sparq", P.SPARQ_ATTEND, r, k)] * 1e6,
                f"{tag}_topk_us": t[("torch_topk", P.SPARQ_SELECT, r, k)] * 1e6,
            })
        summary.append(line)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in line.items()}), flush=True)
    sel = []
    for n_rows, S in SELECT_SHAPES:
        for k in (S // 16, 128):
            sel += measure_selection(n_rows, S, k)
    with open(out / "kernels.json", "w") as f:
        json.dump({"provenance": prov, "summary": summary, "rows": rows, "selection": sel}, f, indent=1)
    keys = sorted({k for r in rows for k in r})
    with open(out / "kernels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for x in summary for k in x)))
        w.writeheader()
        w.writerows(summary)
    # short table last
    print(f"\n{prov['device']}  torch {prov['torch']}  triton {prov['triton']}  copy {copy['bytes_per_s']/1e9:.0f} GB/s")
    print(f"{'B':>3} {'S':>6} {'Hkv':>3} | {'SDPA':>6} {'dense':>6} GB/s {'d/SDPA':>6} {'d/copy':>6} | "
          f"{'1/8 x':>5} {'ideal':>5} {'frac':>5} | {'1/4 x':>5} {'frac':>5} | {'k128 x':>6} {'frac':>5} | sel/topk us")
    for x in summary:
        S = x["S"]
        a, b, c = (f"r{r}k{k}" for r, k in settings(S))
        print(f"{x['B']:>3} {S:>6} {x['Hkv']:>3} | {x['sdpa_GBps']:>6.0f} {x['dense_GBps']:>6.0f}      {x['dense_vs_sdpa']:>6.2f} "
              f"{x['dense_vs_copy']:>6.2f} | {x[a+'_speedup']:>5.2f} {x[a+'_ideal']:>5.2f} {x[a+'_frac_ideal']:>5.2f} | "
              f"{x[b+'_speedup']:>5.2f} {x[b+'_frac_ideal']:>5.2f} | {x[c+'_speedup']:>6.2f} {x[c+'_frac_ideal']:>5.2f} | "
              f"{x[a+'_select_us']:.0f}/{x[a+'_topk_us']:.0f}")
    for s in sel:
        print(f"select {s['rows']}x{s['seq_len']} k={s['k']} {s['method']}: {s['median_s']*1e6:.1f} us")


if __name__ == "__main__":
    main()
