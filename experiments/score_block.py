"""Score kernel tile width by r (MHA, one head per group): times sparq_score at 512 and 256
positions per tile for r in {16, 32, 64}, B in {1, 8}, S = 32k, on one GPU.

    python experiments/score_block.py     (output: reports/kernels/score_block.txt)
"""
import torch
from sparq_perf import phases as P
from sparq_perf.kernels import sparq as sp
from sparq_perf.kernels.runners import phase_runners
from sparq_perf.measure.point import _random_cache
from sparq_perf.measure.timing import time_calls
gen = torch.Generator(device="cuda").manual_seed(1)
for B, S in [(1, 32768), (8, 32768)]:
    caches = [_random_cache(B, 32, S, 128, torch.bfloat16, gen) for _ in range(2)]
    qs = [torch.randn(B, 32, 128, dtype=torch.bfloat16, device="cuda", generator=gen) for _ in range(2)]
    for r in (16, 32, 64):
        for wide in (64, 16, 0):
            sp.WIDE_SCORE_MAX_R = wide
            runs = [phase_runners("sparq", q, c, r=r, k=S // 16, with_append=False) for q, c in zip(qs, caches)]
            t = time_calls([x[P.SPARQ_SCORE] for x in runs], target_s=0.02)
            print(B, S, r, "wide_max_r", wide, "block", sp.score_block(1, r), "%.1f us" % (t["median_s"] * 1e6), flush=True)
    del caches
