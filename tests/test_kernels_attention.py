"""Decode kernels against the float64 reference (kernels/reference.py).

On a machine without a GPU the kernels run in the Triton interpreter (set before triton
is imported); with a GPU, on the GPU. Fresh random data each run; outputs poisoned with
NaN before each call, so an unwritten element fails.

Tolerance: ||out - ref|| / ||ref|| < 1e-2. The kernels read bf16/fp16 K, V and q exactly,
accumulate in fp32, but round the softmax probabilities to the KV dtype before the P.V
product and round the output to the KV dtype: bf16 has an 8-bit mantissa (relative
rounding 2^-9 ~ 2e-3 per value), which gives ~5e-3 on random data; fp16 ~3e-4 (METHOD.md:
bf16 operands land between 1e-3 and 1e-2).
"""
import os

import numpy as np

import pytest  # conftest.py has set TRITON_INTERPRET (the interpreter unless set) before triton loads

torch = pytest.importorskip("torch")
triton = pytest.importorskip("triton")

from sparq_perf.kernels import KVCache, append, sparq_decode  # noqa: E402
from sparq_perf.kernels.reference import dense_reference, sparq_approx_scores, sparq_reference, sparq_selection_scores  # noqa: E402
from sparq_perf.kernels.runners import phase_runners  # noqa: E402
from sparq_perf.kernels.sparq import SparqState, sparq_attend, sparq_score, sparq_select  # noqa: E402

INTERPRETED = os.environ["TRITON_INTERPRET"] not in ("", "0")
DEV = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"
TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


def rel_err(out, ref):
    assert not torch.isnan(out).any(), "output has unwritten (NaN) elements"
    out = out.double().cpu()
    ref = ref.double().cpu()
    return ((out - ref).norm() / ref.norm()).item()


def make(B, Hq, Hkv, S, d, dtype, spare=3):
    k = torch.randn(B, Hkv, S, d, dtype=dtype, device=DEV)
    v = torch.randn(B, Hkv, S, d, dtype=dtype, device=DEV)
    q = torch.randn(B, Hq, d, dtype=dtype, device=DEV)
    return q, k, v, KVCache.from_prefill(k, v, capacity=S + spare)


def poisoned_state(q, cache, r, k, l):
    st = SparqState(q, cache, r, k, l)
    st.out.fill_(float("nan"))
    st.idx.fill_(-1)
    st.scores.fill_(float("nan"))
    return st


# (B, Hq, Hkv, S, d, dtype): MHA, g=4, g=8, MQA; each d; S off the block sizes.
SHAPES = [
    (2, 2, 2, 300, 64, torch.bfloat16),
    (1, 8, 2, 333, 128, torch.bfloat16),
    (1, 8, 1, 130, 80, torch.float16),
    (2, 8, 1, 97, 256, torch.bfloat16),
    (1, 16, 2, 200, 128, torch.float16),
]


@pytest.mark.parametrize("B,Hq,Hkv,S,d,dtype", SHAPES)
def test_dense_matches_reference(B, Hq, Hkv, S, d, dtype):
    q, k, v, cache = make(B, Hq, Hkv, S, d, dtype)
    runners = phase_runners("dense", q, cache)
    runners.state.out.fill_(float("nan"))
    out = runners["dense_attention"]()
    ref = dense_reference(q.double(), k.double(), v.double())
    assert rel_err(out, ref) < TOL[dtype]


@pytest.mark.parametrize("B,Hq,Hkv,S,d,dtype", SHAPES)
@pytest.mark.parametrize("mix_mean", [True, False])
def test_sparq_matches_reference(B, Hq, Hkv, S, d, dtype, mix_mean):
    q, k, v, cache = make(B, Hq, Hkv, S, d, dtype)
    r, kk, l = min(16, d // 4), S // 6, 4
    st = poisoned_state(q, cache, r, kk, l)
    out = sparq_decode(q, cache, r=r, k=kk, l=l, mix_mean=mix_mean, state=st)
    qd, kd, vd = q.double(), k.double(), v.double()
    # Arithmetic: the reference of Algorithm 1 on the kernel's chosen positions.
    ref, _ = sparq_reference(qd, kd, vd, cache.v_bar.double(), r, kk, l, mix_mean, i2=st.idx)
    assert rel_err(out, ref) < TOL[dtype]
    # Choice: the l newest are in, and the chosen set covers as much float64 score as the
    # exact top-k up to near-ties (the kernel ranks fp32 scores from bf16 products).
    idx = st.idx.long().cpu()
    assert ((idx >= 0) & (idx < S)).all()
    assert all(len(set(row.tolist())) == kk for row in idx.reshape(-1, kk))
    newest = torch.arange(S - l, S)
    assert all(set(newest.tolist()) <= set(row.tolist()) for row in idx.reshape(-1, kk))
    s_hat, _ = sparq_approx_scores(qd, kd, r)
    score = sparq_selection_scores(s_hat, Hkv, 0).cpu()
    score[..., S - l:] = 0  # forced in either way: compare the kk - l free choices
    best = torch.topk(score, kk - l, dim=-1).values.sum(-1)
    got = torch.gather(score, 2, idx).sum(-1)
    assert (got >= best - 1e-3 * best.abs().clamp_min(1e-3)).all()


@pytest.mark.parametrize("B,Hq,Hkv,S,d,dtype", [SHAPES[0], SHAPES[1]])  # one head per group; g = 4
@pytest.mark.parametrize("topr_kernel,fma", [(False, True), (True, False)])
def test_sparq_score_paths_match_reference(B, Hq, Hkv, S, d, dtype, topr_kernel, fma, monkeypatch):
    """Top-r in every score program (many rows) or in its own launch (few rows, g > 1);
    one head's logits by multiply-adds or by tl.dot: each path against the reference."""
    from sparq_perf.kernels import sparq as sparq_kernels

    monkeypatch.setattr(sparq_kernels, "SCORE_TOPR_KERNEL", topr_kernel)
    monkeypatch.setattr(sparq_kernels, "SCORE_FMA", fma)
    st = SparqState(*make(B, Hq, Hkv, S, d, dtype)[::3], 16, S // 6, 4)
    assert (st.topr_kernel, st.fma) == (topr_kernel, fma and Hq == Hkv)
    test_sparq_matches_reference(B, Hq, Hkv, S, d, dtype, True)


@pytest.mark.parametrize("Hq,Hkv", [(4, 4), (8, 2)])  # one head per group (one pass); g = 4 (two)
@pytest.mark.parametrize("first,last", [("evict_last", "evict_first"), ("", "")])
def test_score_orders_and_eviction_policies_keep_the_scores(Hq, Hkv, first, last, monkeypatch):
    """The second pass's chunks last first, the filter's tiles against the score's order and
    the K^T loads' L2 policies: the same scores, bit for bit, every chunk written (poisoned
    first), and the step against the reference. (The interpreter ignores the policies and one
    head per group has no second pass: there the bit-for-bit check bites on the GPU run, the
    reversed filter on the top k.)"""
    from sparq_perf.kernels import sparq as sparq_kernels

    B, S, d, dtype = 1, 2500, 64, torch.bfloat16
    q, k, v, cache = make(B, Hq, Hkv, S, d, dtype)
    st = poisoned_state(q, cache, 8, 150, 3)
    assert st.n_chunks > 1  # chunks to reorder
    for name in ("SCORE_SECOND_PASS_REVERSED", "FILTER_AGAINST_SCORE"):
        monkeypatch.setattr(sparq_kernels, name, False)
    for name in ("SCORE_ONE_PASS_EVICT", "SCORE_FIRST_PASS_EVICT", "SCORE_SECOND_PASS_EVICT"):
        monkeypatch.setattr(sparq_kernels, name, "")
    want = sparq_score(q, cache, st).clone()
    monkeypatch.setattr(sparq_kernels, "SCORE_SECOND_PASS_REVERSED", True)
    monkeypatch.setattr(sparq_kernels, "FILTER_AGAINST_SCORE", True)
    monkeypatch.setattr(sparq_kernels, "SCORE_FIRST_PASS_EVICT", first)
    monkeypatch.setattr(sparq_kernels, "SCORE_SECOND_PASS_EVICT", last)
    monkeypatch.setattr(sparq_kernels, "SCORE_ONE_PASS_EVICT", last)
    assert sparq_kernels.filter_reversed(Hq // Hkv) == (Hq == Hkv)  # against a forward last pass only
    st.scores.fill_(float("nan"))
    assert torch.equal(sparq_score(q, cache, st), want)
    out = sparq_decode(q, cache, r=8, k=150, l=3, state=st)
    ref, _ = sparq_reference(q.double(), k.double(), v.double(), cache.v_bar.double(), 8, 150, 3, True, i2=st.idx)
    assert rel_err(out, ref) < TOL[dtype]
    got = torch.gather(st.scores, -1, st.idx.long()).sort(-1).values
    assert torch.equal(got, torch.topk(st.scores, 150, dim=-1).values.sort(-1).values)


@pytest.mark.parametrize("S,kk,l,sure,dtype", [(300, 50, 4, False, torch.bfloat16), (5000, 833, 3, False, torch.float16),
                                               (5000, 2500, 0, True, torch.bfloat16)])
def test_score_filter_leaves_what_the_filter_would(S, kk, l, sure, dtype, monkeypatch):
    """The filter done by the score kernel (SCORE_FILTER, one head per group), its thresholds
    found before it by the sample kernel: the sample is the scores at runs of consecutive
    positions (sample_kernel_run), and the thresholds, the counts, the candidates, the histogram and
    the sure keys are what the threshold and filter kernels leave from that sample and the
    same scores; the pick then has its main path's counts (the candidates hold the k-th), and
    whole steps, twice over the same buffers (the pick resets the counters, the score fills
    them again), match the reference and torch.topk. With g > 1 the score does not filter."""
    from sparq_perf.kernels import sparq as sk

    monkeypatch.setattr(sk, "SCORE_FILTER", True)
    monkeypatch.setattr(sk, "SURE_THRESHOLD", sure)
    B, H, d, r = 2, 2, 64, 8
    q, k, v, cache = make(B, H, H, S, d, dtype)
    st = poisoned_state(q, cache, r, kk, l)
    assert st.score_filter and not st.sel.threshold_in_filter and (st.sel.rank_sure > 0) == sure
    assert st.n_chunks > 1 or S < 1000
    sel = st.sel
    scores = sparq_score(q, cache, st).view(B * H, S)
    n = sel.n_sample
    run = sk.sample_kernel_run(n)
    assert n // run >= sk.SAMPLE_MIN_RUNS
    i = torch.arange(n, device=DEV)
    pos = (i // run) * run * sel.sample_stride + i % run
    assert pos.max() < S and len(set(pos.tolist())) == n
    # (the same products summed; on the GPU the compiler may contract them into other FMAs)
    torch.testing.assert_close(sel.sample, scores[:, pos], rtol=1e-4, atol=1e-6)
    ws = sk.FilterWorkspace(B * H, S, kk, DEV)
    ws.sample.copy_(sel.sample)
    out = torch.full((B * H, kk), -1, dtype=torch.int32, device=DEV)
    sk.filter_candidates(scores.contiguous(), ws, sampled=True, out=out, strided=False)  # runs: as the sample kernel
    assert torch.equal(sel.thresh, ws.thresh)
    assert torch.equal(sel.count, ws.count) and torch.equal(sel.n_sure, ws.n_sure)
    assert torch.equal(sel.hist, ws.hist)
    for row in range(B * H):
        c, ns = int(ws.count[row]), int(ws.n_sure[row])
        assert kk - ns <= c <= sel.cap and ns <= kk  # the pick's main path
        assert torch.equal(sel.cand[row, :c].sort().values, ws.cand[row, :c].sort().values)
        assert set(st.idx.view(B * H, kk)[row, :ns].tolist()) == set(out[row, :ns].tolist())
        assert not sure or ns > 0
    seen, pick = [], sk._pick
    monkeypatch.setattr(sk, "_pick", lambda *a, strided=False: seen.append(strided) or pick(*a, strided=strided))
    sparq_select(st)
    assert seen == [False]  # the sample kernel's runs: the pick's slots for their ranks
    monkeypatch.setattr(sk, "_pick", pick)
    assert (sel.count == 0).all() and (sel.n_sure == 0).all() and (sel.hist == 0).all()
    test_sparq_matches_reference(B, H, H, S, d, dtype, True)
    for _ in range(2):
        st.out.fill_(float("nan"))
        sparq_score(q, cache, st)  # the counters the pick left at zero, filled again: its main path
        for row in range(B * H):
            assert kk - int(sel.n_sure[row]) <= int(sel.count[row]) <= sel.cap
        sparq_select(st)
        assert (sel.count == 0).all() and (sel.n_sure == 0).all() and (sel.hist == 0).all()
        got = sparq_attend(q, cache, st)
        ref, _ = sparq_reference(q.double(), k.double(), v.double(), cache.v_bar.double(), r, kk, l, True, i2=st.idx)
        assert rel_err(got, ref) < TOL[dtype]
        chosen = torch.gather(st.scores, -1, st.idx.long()).sort(-1).values
        assert torch.equal(chosen, torch.topk(st.scores, kk, dim=-1).values.sort(-1).values)
    assert not SparqState(*make(1, 8, 2, S, d, dtype)[::3], r, kk, l).score_filter
    with pytest.raises(RuntimeError, match="select phase runs only after the score"):
        phase_runners("sparq", q, cache, r=r, k=kk, l=l)["sparq_select"]()


@pytest.mark.parametrize("B,Hq,Hkv,S,d,dtype", [SHAPES[0], SHAPES[1]])  # one head per group; g = 4
@pytest.mark.parametrize("max_g", [0, 8])
def test_attend_merge_paths_match_reference(B, Hq, Hkv, S, d, dtype, max_g, monkeypatch):
    """The merge of attend's split partials by the last split program of each KV head (a
    ticket counter; for up to FUSED_MERGE_MAX_G heads per group) or by a launch of its own,
    against the reference, twice (the counters are reset for the next call)."""
    from sparq_perf.kernels import sparq as sparq_kernels

    monkeypatch.setattr(sparq_kernels, "FUSED_MERGE_MAX_G", max_g)
    q, k, v, cache = make(B, Hq, Hkv, S, d, dtype)
    st = poisoned_state(q, cache, 16, S // 2, 4)
    assert st.n_splits > 1  # the merge has partials to merge
    assert sparq_kernels.fused_merge(st.G) == (max_g > 0)
    for _ in range(2):
        st.out.fill_(float("nan"))
        out = sparq_decode(q, cache, r=16, k=S // 2, l=4, state=st)
        ref, _ = sparq_reference(q.double(), k.double(), v.double(), cache.v_bar.double(), 16, S // 2, 4, True, i2=st.idx)
        assert rel_err(out, ref) < TOL[dtype]
        assert not st.merge_count.any()


@pytest.mark.parametrize("B,Hq,Hkv,S,d,dtype,units", [SHAPES[0] + (8,), SHAPES[1] + (1,),
                                                      (2, 8, 1, 400, 256, torch.bfloat16, 1)])
@pytest.mark.parametrize("min_blocks", [2, 10**6])
def test_attend_stages_paths_match_reference(B, Hq, Hkv, S, d, dtype, units, min_blocks, monkeypatch):
    """The attend with ATTEND_STAGES_FEW stages (few rows, at least ATTEND_STAGES_FEW_MIN_BLOCKS
    gathered tiles a program, d_h <= 128) or ATTEND_STAGES, against the reference: a grid
    for `units` SMs, one split of k = S/2 (3 or 4 tiles) a row."""
    from sparq_perf.kernels import _common
    from sparq_perf.kernels import sparq as sparq_kernels

    monkeypatch.setattr(_common, "num_sms", lambda device_index=0: units)
    monkeypatch.setattr(sparq_kernels, "num_sms", lambda device_index=0: units)
    monkeypatch.setattr(sparq_kernels, "ATTEND_WAVES_FEW", 0.5)
    monkeypatch.setattr(sparq_kernels, "ATTEND_STAGES_FEW_MIN_BLOCKS", min_blocks)
    q, k, v, cache = make(B, Hq, Hkv, S, d, dtype)
    st = poisoned_state(q, cache, 16, S // 2, 4)
    assert st.n_splits == 1 and -(-st.chunk_k // st.block_k) >= 3
    deep = min_blocks == 2 and d <= 128
    assert st.attend_stages == (sparq_kernels.ATTEND_STAGES_FEW if deep else sparq_kernels.ATTEND_STAGES)
    out = sparq_decode(q, cache, r=16, k=S // 2, l=4, state=st)
    ref, _ = sparq_reference(q.double(), k.double(), v.double(), cache.v_bar.double(), 16, S // 2, 4, True, i2=st.idx)
    assert rel_err(out, ref) < TOL[dtype]


def test_attend_stages_rule_at_132_sms(monkeypatch):
    """Where the attend runs 5 stages on an H200's 132 SMs (MHA and g = 4 of 32 query heads,
    d_h = 128, k = S/16): few rows and 2 tiles a program or more."""
    from sparq_perf.kernels import _common
    from sparq_perf.kernels import sparq as sparq_kernels

    monkeypatch.setattr(_common, "num_sms", lambda device_index=0: 132)
    monkeypatch.setattr(sparq_kernels, "num_sms", lambda device_index=0: 132)
    got = {}
    for B, S, Hkv in [(1, 32768, 32), (1, 131072, 32), (1, 8192, 32), (1, 32768, 8), (4, 32768, 8),
                      (8, 16384, 32), (64, 4096, 32), (16, 32768, 32)]:
        q = torch.zeros(B, 32, 128)
        cache = KVCache.empty(B, Hkv, S, 128, device="cpu")
        cache.length = S
        st = SparqState(q, cache, 16, S // 16)
        got[(B, S, Hkv)] = (-(-st.chunk_k // st.block_k), st.attend_stages)
    assert got == {(1, 32768, 32): (4, 5), (1, 131072, 32): (15, 5), (1, 8192, 32): (1, 3), (1, 32768, 8): (1, 3),
                   (4, 32768, 8): (4, 5), (8, 16384, 32): (6, 3), (64, 4096, 32): (4, 3), (16, 32768, 32): (16, 3)}


@pytest.mark.parametrize("B,Hq,Hkv,S,d,dtype", [SHAPES[0], SHAPES[1], SHAPES[2]])
def test_sparq_full_r_and_k_is_dense(B, Hq, Hkv, S, d, dtype):
    q, k, v, cache = make(B, Hq, Hkv, S, d, dtype)
    st = poisoned_state(q, cache, d, S, 0)
    out = sparq_decode(q, cache, r=d, k=S, l=0, mix_mean=True, state=st)  # alpha = 1
    ref = dense_reference(q.double(), k.double(), v.double())
    assert rel_err(out, ref) < TOL[dtype]


def test_phases_run_alone_and_repeat():
    q, k, v, cache = make(1, 8, 2, 257, 64, torch.bfloat16)
    runners = phase_runners("sparq", q, cache, r=8, k=40, l=2)
    assert {"append", "sparq_score", "sparq_select", "sparq_attend", "sparq_decode"} <= set(runners)
    first = runners["sparq_decode"]().clone()
    for name in ("sparq_score", "sparq_select", "sparq_attend"):
        runners[name]()
    assert torch.equal(runners["sparq_attend"](), first)  # deterministic, no state left behind
    runners["append"]()
    assert cache.length == 257


@pytest.mark.skipif(DEV != "cuda", reason="a GPU's launches")
def test_kernels_launch_dependent_on_hopper():
    """From sm_90 every kernel of a step launches with programmatic dependent launch, so the
    GPU tests here (eager, and replayed in a graph below) run the overlapped launches."""
    from sparq_perf.kernels import _common
    hopper = torch.cuda.get_device_capability()[0] >= 9
    assert _common.pdl_args() == ({"PDL": 1 if _common.PDL_LAUNCH_EARLY else 2, "launch_pdl": True} if hopper
                                  else {"PDL": 0})


@pytest.mark.skipif(DEV != "cuda", reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("Hkv,score_filter", [(8, False), (8, True), (2, False)])
def test_steps_replayed_in_a_cuda_graph_match_eager_calls(Hkv, score_filter, monkeypatch):
    """Rounds of SparQ and dense steps over two inputs, captured in one CUDA graph and
    replayed, give what eager calls gave: the same chosen scores, at the same positions but
    for ties at the k-th largest, and the same outputs (the counters that the kernels reset
    for the next call work across replays). One head per group: with the filter in the score
    kernel too."""
    from sparq_perf.kernels import sparq as sk

    monkeypatch.setattr(sk, "SCORE_FILTER", score_filter)
    sets = [make(4, 8, Hkv, 5000, 128, torch.bfloat16) for _ in range(2)]
    sparq = [phase_runners("sparq", q, cache, r=16, k=400, l=4, with_append=False) for q, _, _, cache in sets]
    assert all(x.state.score_filter == (score_filter and Hkv == 8) for x in sparq)
    dense = [phase_runners("dense", q, cache, with_append=False) for q, _, _, cache in sets]
    steps = [x["sparq_decode"] for x in sparq] + [x["dense_decode"] for x in dense]
    eager = [f().clone() for f in steps]
    chosen = [x.state.idx.sort(-1).values.clone() for x in sparq]
    eager_scores = [x.state.scores.clone() for x in sparq]
    for x, want in zip(sparq, chosen):  # the eager selection itself: torch.topk's scores
        top = torch.topk(x.state.scores, want.shape[-1], dim=-1).values.sort(-1).values
        assert torch.equal(torch.gather(x.state.scores, -1, want.long()).sort(-1).values, top)
    for x in sparq + dense:
        x.state.out.fill_(float("nan"))
    for x in sparq:
        x.state.idx.fill_(-1)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        steps[0]()  # warm the capture stream
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(3):
            for f in steps:
                f()
    for x in sparq + dense:
        x.state.out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    for x, want, eager_s in zip(sparq, chosen, eager_scores):
        got = x.state.idx.sort(-1).values
        scores = x.state.scores
        assert torch.equal(scores, eager_s)  # the same sums in the same order
        assert (got[..., 1:] != got[..., :-1]).all(), "a position chosen twice"
        got_s = torch.gather(scores, -1, got.long()).sort(-1).values
        want_s = torch.gather(scores, -1, want.long()).sort(-1).values
        assert torch.equal(got_s, want_s), "other scores chosen"
        # other positions only where more keys hold the k-th largest score than are chosen:
        # which of them is taken follows the order the filter's atomics appended them
        kth = want_s[..., :1]
        tied = (scores == kth).sum(-1) > (want_s == kth).sum(-1)
        assert not ((got != want).any(-1) & ~tied).any(), "other positions without a tie at the k-th"
    for x, want in zip(dense, eager[len(sparq):]):
        assert torch.equal(x.state.out, want)  # the same sums in the same order
    for x, want in zip(sparq, eager):
        # the same rows, gathered in another order (the filter's atomics): the splits' sums
        # and the probabilities rounded to bf16 before P.V differ by rounding, ~2e-3
        assert rel_err(x.state.out, want) < TOL[torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_append_writes_both_layouts_and_mean(dtype):
    B, H, S, d = 2, 3, 50, 80
    _, k, v, cache = make(B, H, H, S, d, dtype, spare=4)
    k_new = torch.randn(B, H, d, dtype=dtype, device=DEV)
    v_new = torch.randn(B, H, d, dtype=dtype, device=DEV)
    append(cache, k_new, v_new)
    assert cache.length == S + 1
    assert torch.equal(cache.K[:, :, S], k_new)
    assert torch.equal(cache.KT[:, :, :, S], k_new)
    assert torch.equal(cache.V[:, :, S], v_new)
    all_v = torch.cat([v, v_new[:, :, None]], dim=2).double()
    assert torch.allclose(cache.v_bar.double(), all_v.mean(2), rtol=0, atol=1e-5)  # fp32 running mean


def test_append_runners_write_positions_a_kt_line_apart():
    """Each append runner writes its own position (64 bf16 apart: another 128-byte line of
    every K^T row) in both layouts and leaves the length alone; too little room is refused."""
    from sparq_perf.kernels.runners import append_positions, append_runners

    cache = KVCache.empty(2, 3, 40 + 64 * 2 + 1, 64, device=DEV)
    cache.length = 40
    assert append_positions(cache, 3) == [40, 104, 168]
    for p, run in zip(append_positions(cache, 3), append_runners(cache, 3)):
        cache.K[:, :, p].fill_(float("nan"))
        cache.KT[:, :, :, p].fill_(float("nan"))
        run()
        assert not torch.isnan(cache.K[:, :, p]).any() and torch.equal(cache.KT[:, :, :, p], cache.K[:, :, p])
    assert cache.length == 40
    with pytest.raises(ValueError, match="capacity"):
        append_runners(cache, 4)


def test_kt_rows_start_16_byte_aligned_at_any_capacity():
    from sparq_perf.kernels.cache import KT_ALIGN

    for capacity in (1, 50, 1001, 4096):
        cache = KVCache.empty(2, 3, capacity, 64, device=DEV)
        assert cache.KT.shape == (2, 3, 64, capacity) and cache.capacity == capacity
        assert cache.KT.stride(2) % KT_ALIGN == 0 and cache.KT.stride(2) >= capacity
        assert cache.KT.data_ptr() % 16 == 0


def test_score_loads_stop_at_s_rounded_up_only_where_the_rows_have_room():
    from sparq_perf.kernels.sparq import kt_load_end

    padded = KVCache.empty(1, 2, 1001, 64, device=DEV).KT  # rows 1024 apart
    assert kt_load_end(padded, 1001) == 1008 and kt_load_end(padded, 992) == 992
    bare = torch.zeros(1, 2, 64, 1001, device=DEV)  # a caller's own K^T, rows 1001 apart
    assert kt_load_end(bare, 1001) == 1001 and kt_load_end(bare, 990) == 990


def test_cost_model_sizes_the_selection_as_the_kernels_do():
    """The cost model's sample and candidates are the kernels' (one plan, the same constants)."""
    from sparq_perf import select_plan
    from sparq_perf.kernels import sparq as sparq_kernels

    assert (sparq_kernels.SAMPLE_MIN, sparq_kernels.SAMPLE_MAX, sparq_kernels.SAMPLE_STRIDE, sparq_kernels.SAMPLE_SIGMAS) == (
        select_plan.SAMPLE_MIN, select_plan.SAMPLE_MAX, select_plan.SAMPLE_STRIDE, select_plan.SAMPLE_SIGMAS)
    for S, k in [(300, 100), (4096, 128), (16384, 1024), (131072, 8192)]:
        ws = sparq_kernels.FilterWorkspace(2, S, k, "cpu")
        assert ws.n_sample == select_plan.sample_size(S)
        assert ws.rank == select_plan.sample_rank(S, k, ws.n_sample)
        assert ws.sure == select_plan.uses_sure(S, k, ws.n_sample, 2) and ws.sure == (S == 131072)
        assert ws.rank_sure == (select_plan.sure_rank(S, k, ws.n_sample) if ws.sure else 0)
        # the score kernel's sample, one key every stride: its ranks at STRIDED_SIGMAS, both the
        # cost model's (its candidates where the score writes the sample)
        sig = select_plan.rank_sigmas(True)
        assert ws.ranks(strided=True) == (select_plan.sample_rank(S, k, ws.n_sample, sig),
                                          select_plan.sure_rank(S, k, ws.n_sample, sig) if ws.sure else 0)
        assert ws.ranks(strided=False) == (ws.rank, ws.rank_sure)
        assert ws.pick_slots(True) == select_plan.pick_slots_held(S, k, ws.n_sample, ws.sure, sig)
        assert ws.pick_slots(False) == ws.slots
        assert ws.cap >= select_plan.picked_from(S, k, ws.n_sample, ws.sure, spread=select_plan.SAMPLE_SIGMAS)
        # the pick's slots (the serial term's items) and the filter's tiles (its grid)
        assert ws.slots == select_plan.pick_slots_held(S, k, ws.n_sample, ws.sure)
        assert ws.cap == select_plan.pick_room(S, k, ws.n_sample, ws.sure, select_plan.SAMPLE_SIGMAS)
        assert ws.block == select_plan.FILTER_BLOCK


@pytest.mark.parametrize("max_rows", [0, 64])
def test_cost_model_counts_the_filters_thresholds_as_the_kernels(max_rows, monkeypatch):
    """Where the filter finds the thresholds (few rows), the cost model counts one launch
    fewer and the filter's larger tiles, as the kernels' workspace has them."""
    from sparq_perf import select_plan
    from sparq_perf.cost.attention import SparqImpl, select_cost
    from sparq_perf.kernels import sparq as sparq_kernels

    monkeypatch.setattr(select_plan, "THRESHOLD_IN_FILTER_MAX_ROWS", max_rows)  # one rule, read by both
    for rows, S, k in [(8, 32768, 2048), (64, 8192, 512), (65, 8192, 512), (32, 131072, 8192), (16, 4096, 256)]:
        ws = sparq_kernels.FilterWorkspace(rows, S, k, "cpu")
        assert ws.threshold_in_filter == (rows <= max_rows)
        cost = select_cost("select", np.float64(rows), S, k, SparqImpl())
        assert cost.launches == 3 - ws.threshold_in_filter
        (grid,) = cost.grids
        assert float(grid.block) == ws.block
        assert ws.block == select_plan.FILTER_BLOCK * ws.filter_warps
        if ws.threshold_in_filter:  # the sample at 16 keys a thread
            assert ws.filter_warps == min(16, max(1, triton.next_power_of_2(ws.n_sample) // 512))

@pytest.mark.parametrize("units", [8, 132])
@pytest.mark.parametrize("cap", [float("inf"), 8.0])
def test_cost_model_counts_the_attends_programs_as_the_kernels_grid(units, cap, monkeypatch):
    """The attend's split grid in the cost model (its programs, the calibration's program
    term) is the grid the kernels launch, with the same SM count, without and with a cap on
    the blocks a program where the rows are few (at 8 units, 4 rows of k = 4096: 4 splits of
    16 blocks, capped at 8 blocks 8 splits)."""
    from sparq_perf.cost.attention import SparqImpl, attention_costs
    from sparq_perf.kernels import _common
    from sparq_perf.kernels import sparq as sparq_kernels
    from sparq_perf.workload import Workload

    monkeypatch.setattr(_common, "num_sms", lambda device_index=0: units)
    monkeypatch.setattr(sparq_kernels, "num_sms", lambda device_index=0: units)
    monkeypatch.setattr(sparq_kernels, "ATTEND_MAX_BLOCKS_FEW", cap)
    impl = SparqImpl(attend_max_blocks_few=cap)
    for B, Hq, Hkv, S, k in [(1, 4, 4, 4096, 256), (1, 8, 2, 4096, 1000), (3, 4, 4, 2048, 2048), (64, 4, 4, 512, 64),
                             (40, 8, 8, 4096, 4096), (1, 4, 4, 8192, 4096)]:
        q = torch.zeros(B, Hq, 64)
        cache = KVCache.empty(B, Hkv, S, 64, device="cpu")
        cache.length = S
        st = SparqState(q, cache, 8, k)
        if (B, S, units) == (1, 8192, 8):
            assert st.n_splits == (8 if cap == 8.0 else 4)
        cost = attention_costs("sparq", Workload(B, S, Hq, Hkv, 64, 8, k), impl)["sparq_attend"]
        (grid,) = cost.grids
        assert float(grid.programs(units)) == B * Hkv * st.n_splits, (B, Hq, Hkv, k, units)


def test_dense_grid_is_whole_waves(monkeypatch):
    """The dense kernel's splits: at most one whole wave of programs over the SMs (hand
    counts at 132 SMs), at least one, at most one per block of 128 positions."""
    from sparq_perf.cost.base import splits
    from sparq_perf.kernels import _common
    from sparq_perf.kernels.dense import DenseWorkspace

    # 32 rows: 132 // 32 = 4 splits (128 programs); 8 rows: 16; 256 rows: 1; one row of
    # 1000 positions: 8 blocks, so 8 splits (not 132)
    for rows, S, want in [(32, 32768, 4), (8, 32768, 16), (256, 32768, 1), (1, 1000, 8), (132, 4096, 1), (66, 4096, 2)]:
        assert splits(rows, S, 128, 1.0, 132, whole=True) == want, (rows, S)
    monkeypatch.setattr(_common, "num_sms", lambda device_index=0: 132)
    # 40 rows of 32k: 3 splits (the rule before, about two waves, gave 7)
    for B, Hkv, S, want in [(1, 4, 4096, 32), (2, 4, 4096, 16), (10, 4, 32768, 3), (40, 4, 512, 1)]:
        q = torch.zeros(B, 4, 64)
        cache = KVCache.empty(B, Hkv, S, 64, device="cpu")
        cache.length = S
        assert DenseWorkspace(q, cache).n_splits == want, (B, Hkv, S)


@pytest.mark.parametrize("Hq,Hkv,S,l", [(4, 4, 5000, 0), (8, 2, 4500, 7)])  # one head per group; g = 4 with a window
def test_score_writes_the_threshold_sample_the_selection_reads(Hq, Hkv, S, l):
    """sparq_score stores each row's sample (the scores at every stride-th position) as it
    computes them; the selection's threshold reads it there and still picks the top k."""
    q, _, _, cache = make(1, Hq, Hkv, S, 64, torch.bfloat16)
    st = poisoned_state(q, cache, 8, 300, l)
    st.sel.sample.fill_(float("nan"))
    sparq_score(q, cache, st)
    n, stride = st.sel.n_sample, st.sel.sample_stride
    assert n < S and stride == S // n
    assert torch.equal(st.sel.sample, st.scores.reshape(-1, S)[:, : n * stride : stride])
    sparq_select(st)
    want = torch.topk(st.scores, 300, dim=-1).values.min(-1, keepdim=True).values
    chosen = torch.gather(st.scores, -1, st.idx.long())
    assert (chosen >= want).all() and (st.idx.sort(-1).values.diff(dim=-1) > 0).all()


def test_the_step_check_passes_a_good_step_and_refuses_a_mismatched_one():
    from sparq_perf.measure.point import check_sparq_on_cache

    q, _, _, cache = make(1, 8, 2, 257, 64, torch.bfloat16)
    runner = phase_runners("sparq", q, cache, r=8, k=40)
    assert check_sparq_on_cache(runner, q, cache, 8, 40) < TOL[torch.bfloat16]
    with pytest.raises(RuntimeError):  # checked as if it chose 41 positions: it chose 40
        check_sparq_on_cache(runner, q, cache, 8, 41)
