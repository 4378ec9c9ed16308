"""Measure one workload point on the GPU: check every kernel's output, then time each phase.

Returns plain dicts (one per method and phase). Times are seconds per call (median and
20th/80th percentiles, CUDA-graph replay, input sets rotated for a cold L2). Outputs are
checked against the float64 reference on batch element 0 before anything is timed.
"""
from __future__ import annotations

import torch

from .. import phases as P
from .timing import sets_for_cold_l2, time_calls

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_QUERY_SETS = 32  # queries (with their SparQ buffers) rotated among at most
APPEND_POSITIONS = 16  # the append is timed rotating among this many positions a K^T line apart
CHECK_TOL = 1e-2  # bf16/fp16 operands, fp32 accumulation (METHOD.md: 1e-3..1e-2)


def _rel_err(out, ref):
    out, ref = out.double(), ref.double()
    if torch.isnan(out).any():
        return float("nan")
    return ((out - ref).norm() / ref.norm()).item()


def same_topk(scores, idx, k) -> bool:
    """idx [..., k] picks the values torch.topk picks from scores [..., S] (which of equal
    values are taken may differ)."""
    want = torch.topk(scores, k, dim=-1).values.sort(-1).values
    got = torch.gather(scores, -1, idx.long()).sort(-1).values
    return torch.equal(want, got)


def check_sparq_step(runner, q0, K0, V0, v_bar0, r, k, l=0, mix_mean=True, where=""):
    """Run a SparQ runner's whole step (output poisoned first), compare batch element 0 with
    the float64 reference given the kernel's chosen positions (q0, K0, V0, v_bar0: element 0
    as float64), and the selection with torch.topk. Returns the relative error; raises
    RuntimeError if either is off."""
    from sparq_perf.kernels.reference import sparq_reference

    st = runner.state
    st.out.fill_(float("nan"))
    out = runner[P.SPARQ_DECODE]()
    ref, _ = sparq_reference(q0, K0, V0, v_bar0, r, k, l, mix_mean, i2=st.idx[0:1])
    err = _rel_err(out[0:1], ref)
    if not err < CHECK_TOL or not same_topk(st.scores, st.idx, k):
        raise RuntimeError(f"sparq off the reference ({err:.3g}) or selection != topk at {where}")
    return err


def check_sparq_on_cache(runner, q, cache, r, k):
    """check_sparq_step for a runner made on q and cache (l = 0, mixing on): element 0 of
    each, upcast to float64 here."""
    S = cache.length
    return check_sparq_step(runner, q[0:1].double(), cache.K[0:1, :, :S].double(), cache.V[0:1, :, :S].double(),
                            cache.v_bar[0:1].double(), r, k)


def query_sets(B, Hkv, S, d, e, settings, n_sets, free_bytes, sets_for) -> int:
    """Queries SparQ rotates among at one point (each with its own buffers, the i-th on cache
    set i mod n_sets). The dense calls read all of a cache set, so the n_sets sets cover 5x
    L2; a SparQ call reads far less of one (r rows of K^T, k rows of K and V), so it rotates
    more queries: each call scores and gathers other rows of the caches than the calls
    before it, while what one phase hands the next (scores, indices) stays the query's own,
    as in a decode step. sets_for(bytes, most) -> sets covering 5x L2 (timing.sets_for_cold_l2)."""
    least_read = min(min(r * S, 2 * k * d) for r, k in settings) * B * Hkv * e
    state_bytes = 3 * B * Hkv * S * 4  # scores, sample and candidates: an upper bound
    return max(n_sets, min(sets_for(least_read, MAX_QUERY_SETS), int(0.25 * free_bytes // state_bytes)))


def _random_cache(B, Hkv, S, d, dtype, gen):
    from sparq_perf.kernels import KVCache
    from sparq_perf.kernels.runners import line_positions

    line = line_positions(torch.finfo(dtype).bits // 8)  # room for the append runners' positions
    cache = KVCache.empty(B, Hkv, S + 1 + line * (APPEND_POSITIONS - 1), d, dtype=dtype, device="cuda")
    K = cache.K[:, :, :S]
    K.normal_(generator=gen)
    cache.KT[:, :, :, :S].copy_(K.transpose(2, 3))
    cache.V[:, :, :S].normal_(generator=gen)
    cache.v_bar.copy_(cache.V[:, :, :S].mean(dim=2, dtype=torch.float32))
    cache.length = S
    return cache


def _sdpa(q, cache):
    import torch.nn.functional as F

    S = cache.length
    q4 = q[:, :, None, :]
    K, V = cache.K[:, :, :S], cache.V[:, :, :S]
    gqa = q.shape[1] != cache.n_kv_heads
    kwargs = {"enable_gqa": True} if gqa else {}
    return lambda: F.scaled_dot_product_attention(q4, K, V, **kwargs)


def measure_point(batch, seq_len, n_heads, n_kv_heads, d_head, sparq_settings=((16, None),), l=0, mix_mean=True,
                  dtype="bfloat16", use_graph=True, max_sets=8, seed=0, with_topk=True):
    """Rows for SDPA, our dense and our SparQ at each (r, k) in sparq_settings (k None: S/16).

    Raises RuntimeError if a kernel's output is off the float64 reference by more than
    CHECK_TOL, or the selection differs from torch.topk's.
    """
    from sparq_perf.kernels.reference import dense_reference
    from sparq_perf.kernels.runners import append_runners, phase_runners

    B, S, Hq, Hkv, d = batch, seq_len, n_heads, n_kv_heads, d_head
    dt = DTYPES[dtype]
    e = torch.finfo(dt).bits // 8
    gen = torch.Generator(device="cuda").manual_seed(seed)
    working_set = 3 * B * Hkv * S * d * e  # K, K^T, V
    free, _ = torch.cuda.mem_get_info()
    n_sets = min(sets_for_cold_l2(working_set, max_sets), max(1, int(0.5 * free // working_set)))
    caches = [_random_cache(B, Hkv, S, d, dt, gen) for _ in range(n_sets)]
    qs = [torch.randn(B, Hq, d, dtype=dt, device="cuda", generator=gen) for _ in range(n_sets)]
    base = dict(batch=B, seq_len=S, n_heads=Hq, n_kv_heads=Hkv, d_head=d, dtype=dtype, l=l, mix_mean=mix_mean)
    rows = []

    def add(method, phase, fns, r=None, k=None, check=None):
        t = time_calls(fns, use_graph=use_graph)
        rows.append({**base, "method": method, "phase": phase, "r": r, "k": k, **t, "check_rel_err": check})

    # reference on batch element 0 of set 0, float64
    K0 = caches[0].K[0:1, :, :S].double()
    V0 = caches[0].V[0:1, :, :S].double()
    q0 = qs[0][0:1].double()
    dense_ref = dense_reference(q0, K0, V0)

    sdpa = [_sdpa(q, c) for q, c in zip(qs, caches)]
    err = _rel_err(sdpa[0]()[0:1, :, 0], dense_ref)
    add("sdpa", P.DENSE_DECODE, sdpa, check=err)

    dense = [phase_runners("dense", q, c) for q, c in zip(qs, caches)]
    dense[0].state.out.fill_(float("nan"))
    err = _rel_err(dense[0][P.DENSE_ATTENTION]()[0:1], dense_ref)
    if not err < CHECK_TOL:
        raise RuntimeError(f"dense_attention off the reference: {err:.3g} at {base}")
    add("dense", P.APPEND, [f for c in caches for f in append_runners(c, APPEND_POSITIONS)])
    add("dense", P.DENSE_DECODE, [x[P.DENSE_DECODE] for x in dense], check=err)
    del dense

    settings = [(r, k or S // 16) for r, k in sparq_settings]
    n_q = query_sets(B, Hkv, S, d, e, settings, n_sets, torch.cuda.mem_get_info()[0], sets_for_cold_l2)
    sp_qs = qs + [torch.randn(B, Hq, d, dtype=dt, device="cuda", generator=gen) for _ in range(n_q - n_sets)]
    pairs = [(q, caches[i % n_sets]) for i, q in enumerate(sp_qs)]
    for r, k in settings:
        sp = [phase_runners("sparq", q, c, r=r, k=k, l=l, mix_mean=mix_mean) for q, c in pairs]
        err = check_sparq_step(sp[0], q0, K0, V0, caches[0].v_bar[0:1].double(), r, k, l, mix_mean,
                               where=f"{base}, r={r}, k={k}")
        for phase in (P.SPARQ_SCORE, P.SPARQ_SELECT, P.SPARQ_ATTEND):
            add("sparq", phase, [x[phase] for x in sp], r=r, k=k)
        add("sparq", P.SPARQ_DECODE, [x[P.SPARQ_DECODE] for x in sp], r=r, k=k, check=err)
        if with_topk:
            add("torch_topk", P.SPARQ_SELECT,
                [(lambda s=x.state.scores: torch.topk(s, k, dim=-1, sorted=False)) for x in sp], r=r, k=k)
        del sp
    del caches
    torch.cuda.empty_cache()
    return rows


def measure_selection(rows, seq_len, k, max_sets=8, seed=0):
    """Our exact top-k against torch.topk on the same fp32 scores [rows, S] (unsorted)."""
    from sparq_perf.kernels import topk_indices
    from sparq_perf.kernels.sparq import FilterWorkspace

    gen = torch.Generator(device="cuda").manual_seed(seed)
    n_sets = sets_for_cold_l2(rows * seq_len * 4, max_sets)
    scores = [torch.randn(rows, seq_len, device="cuda", generator=gen) for _ in range(n_sets)]
    outs = [torch.empty(rows, k, dtype=torch.int32, device="cuda") for _ in range(n_sets)]
    wss = [FilterWorkspace(rows, seq_len, k, "cuda") for _ in range(n_sets)]  # made once, as in a server
    for _ in range(2):  # the second call finds the counters the first left
        outs[0].fill_(-1)
        topk_indices(scores[0], k, out=outs[0], ws=wss[0])
        if not same_topk(scores[0], outs[0], k):
            raise RuntimeError(f"selection != torch.topk at rows={rows}, S={seq_len}, k={k}")
    base = dict(rows=rows, seq_len=seq_len, k=k)
    ours = time_calls([(lambda s=s, o=o, w=w: topk_indices(s, k, out=o, ws=w)) for s, o, w in zip(scores, outs, wss)])
    theirs = time_calls([(lambda s=s: torch.topk(s, k, dim=-1, sorted=False)) for s in scores])
    return [{**base, "method": "ours", **ours}, {**base, "method": "torch_topk", **theirs}]
