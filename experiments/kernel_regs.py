"""Registers and spilled bytes a thread of every kernel one SparQ step and one dense step
compile to on this GPU, as the driver loaded them (a kernel's register count sets how many of
its warps an SM holds).

    python experiments/kernel_regs.py [--out FILE]

Runs the SparQ step (1/8: r=16, k=S/16) and the dense step at B=1, S=32k, 32 query heads,
d_h=128, bf16, with 32 and 8 KV heads, each checked against the float64 reference first.
"""
from __future__ import annotations

import argparse
import json

import torch

from sparq_perf.kernels import _common as cm, dense as dn, sparq as sp
from sparq_perf.kernels.runners import phase_runners
from sparq_perf.measure.point import _random_cache, check_sparq_on_cache


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    gen = torch.Generator(device="cuda").manual_seed(5)
    S = 32768
    for Hkv in (32, 8):
        cache = _random_cache(1, Hkv, S, 128, torch.bfloat16, gen)
        q = torch.randn(1, 32, 128, dtype=torch.bfloat16, device="cuda", generator=gen)
        sparq = phase_runners("sparq", q, cache, r=16, k=S // 16, with_append=False)
        print(f"H_kv={Hkv}: SparQ off the reference by {check_sparq_on_cache(sparq, q, cache, 16, S // 16):.2e}")
        phase_runners("dense", q, cache, with_append=False)["dense_decode"]()
    torch.cuda.synchronize()
    rows, seen = [], set()
    for mod in (sp, dn, cm):
        for name in dir(mod):
            fn = getattr(mod, name)
            if hasattr(fn, "device_caches") and id(fn) not in seen:  # a kernel imported by another module: once
                seen.add(id(fn))
                rows += [dict(kernel=name, **x) for x in cm.compiled_variants(fn)]
    for x in rows:
        print(f"{x['kernel']:24} warps {x['warps']:2}  regs {x['regs']:3}  spilled {x['spilled_bytes']} B")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "kernels": rows}, f, indent=1)


if __name__ == "__main__":
    main()
