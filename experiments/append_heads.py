"""The append's time by KV-head count, writing one position again and again (as `measure`
times it) and rotating through positions 64 apart (each call writes other 128-byte lines of
K^T, as decode steps do once the rest of the step has swept the L2). Shows where the K^T
column's lines stop staying in L2.

    python experiments/append_heads.py [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
import triton

from sparq_perf.cost.attention import append_cost
from sparq_perf.kernels.append import write_at
from sparq_perf.kernels.cache import KVCache
from sparq_perf.measure.timing import l2_bytes, time_calls
from sparq_perf.workload import Workload

HEADS = [32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]  # B x 32 KV heads
H, D, S0 = 32, 128, 64
LINE_BYTES = 128
MAX_POSITIONS = 128


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    res = []
    for heads in HEADS:
        B = heads // H
        lines = heads * D * LINE_BYTES  # K^T lines one call writes into
        n_pos = max(2, min(MAX_POSITIONS, math.ceil(5 * l2_bytes() / lines)))
        cache = KVCache.empty(B, H, S0 + 64 * n_pos, D, device="cuda")
        cache.length = S0
        k_new = torch.randn(B, H, D, dtype=cache.dtype, device="cuda")
        v_new = torch.randn(B, H, D, dtype=cache.dtype, device="cuda")
        write_at(cache, k_new, v_new, S0)
        assert torch.equal(cache.KT[:, :, :, S0], k_new) and torch.equal(cache.V[:, :, S0], v_new)
        same = time_calls(lambda: write_at(cache, k_new, v_new, S0))
        rot = time_calls([(lambda p=S0 + 64 * j: write_at(cache, k_new, v_new, p)) for j in range(n_pos)])
        cost = append_cost(Workload(B, S0, H, H, D, 16, 16, 0, 2.0, 2.0), "sparq")
        row = dict(heads=heads, positions=n_pos, kt_lines_mb=lines / 1e6, model_bytes=float(cost.bytes),
                   same_us=same["median_s"] * 1e6, same_p20_us=same["p20_s"] * 1e6, same_p80_us=same["p80_s"] * 1e6,
                   rotated_us=rot["median_s"] * 1e6, rotated_p20_us=rot["p20_s"] * 1e6, rotated_p80_us=rot["p80_s"] * 1e6)
        res.append(row)
        print(" ".join(f"{a}={b:.2f}" if isinstance(b, float) else f"{a}={b}" for a, b in row.items()), flush=True)
        del cache
        torch.cuda.empty_cache()
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        prov = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                "l2_bytes": l2_bytes(), "git_commit": os.environ.get("GIT_COMMIT", "unknown")}
        with open(Path(args.out) / "append_heads.json", "w") as f:
            json.dump({"provenance": prov, "rows": res}, f, indent=1)


if __name__ == "__main__":
    main()
