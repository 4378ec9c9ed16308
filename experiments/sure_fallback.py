"""Does the selection's sure path fall back at many rows? On normal fp32 scores, in Triton's
interpreter (no GPU needed), with the sure threshold forced: per row, whether the pick would
search the whole row (more than k sure keys, too few candidates or more than their room) or
bisect over the candidates (the k-th largest in the last bin or in a bin of more than
PICK_TIES keys), as the pick kernel decides from the filter's counts and histogram.

    python experiments/sure_fallback.py ROWS S K [SEED]
Prints one line per run.
"""
import os
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"
import torch  # noqa: E402

from sparq_perf.kernels import sparq as sp  # noqa: E402


def main(argv):
    rows, S, k = (int(a) for a in argv[:3])
    torch.manual_seed(int(argv[3]) if len(argv) > 3 else 0)
    sp.SURE_THRESHOLD = True
    scores = torch.randn(rows, S)
    ws = sp.FilterWorkspace(rows, S, k, "cpu")
    t = time.time()
    out = torch.full((rows, k), -1, dtype=torch.int32)
    count = sp.filter_candidates(scores, ws, out=out).clone()
    n_sure = ws.n_sure.clone()
    whole = bisect = 0
    for row in range(rows):
        c, ns = int(count[row]), int(n_sure[row])
        kk = k - ns
        if not (ns <= k and c >= kk and c <= ws.cap):
            whole += 1
            continue
        at_or_above = ws.hist[row].flip(0).cumsum(0).flip(0)  # keys in each bin and above
        b_kth = int((at_or_above >= kk).nonzero().max())
        if b_kth == ws.bins - 1 or int(ws.hist[row, b_kth]) > ws.ties:
            bisect += 1
    print(f"rows {rows} S {S} k {k}: sure {ws.rank_sure > 0} cap {ws.cap} slots {ws.slots} bins {ws.bins}; "
          f"whole-row fallback {whole}, bisection fallback {bisect}; n_sure {n_sure.min().item()}-{n_sure.max().item()} "
          f"cand {count.min().item()}-{count.max().item()} ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
