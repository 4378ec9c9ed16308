"""Exact top-k selection (kernels/sparq.py topk_indices) against torch.topk.

The kernel ranks fp32 scores by their bits, so on the same scores it must return the
same set of values as torch.topk, exactly; where values tie at the k-th largest, which
positions are taken may differ, so sets are compared by their sorted values.
"""
import os

import pytest  # conftest.py has set TRITON_INTERPRET (the interpreter unless set) before triton loads

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sparq_perf.kernels import sparq as sparq_module  # noqa: E402
from sparq_perf.kernels import topk_indices  # noqa: E402

INTERPRETED = os.environ["TRITON_INTERPRET"] not in ("", "0")
DEV = "cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda"


PATHS = ["filter", "small-tiles", "sample-missed", "overflow", "beyond-slots", "sure", "sure-missed", "few-bins",
         "threshold-kernel", "thresholds-in-filter", "sure-in-filter"]


@pytest.fixture(params=PATHS, autouse=True)
def select_path(request, monkeypatch):
    """Run each test on every path of the selection: the sampled threshold, candidates and
    an exact pick; with small tiles, a sample smaller than the row and the pick's writes a
    tile at a time; the candidates read a tile at a time (more than the pick's slots, its
    first tile); and forced into the whole-row fallback by a threshold above the k-th
    largest or by more candidates than their room holds. With the sure threshold (those
    above it written at once, the band below it picked): wherever it exists, and set too
    low (more than k keys above it: the whole-row fallback). With 16 bins and 32 ties at
    most (the k-th's bin too full, or the last: the pick falls back to bisection from
    memory). The thresholds by a launch of their own or by every filter program (with and
    without the sure one); the other paths as the rows decide (threshold_in_filter)."""
    p = request.param
    if p == "threshold-kernel":
        monkeypatch.setattr(sparq_module, "THRESHOLD_IN_FILTER", False)
    if p in ("thresholds-in-filter", "sure-in-filter"):
        monkeypatch.setattr(sparq_module, "THRESHOLD_IN_FILTER", True)
    if p == "sure-in-filter":
        monkeypatch.setattr(sparq_module, "SURE_THRESHOLD", True)
    if p == "small-tiles":
        monkeypatch.setattr(sparq_module, "FILTER_BLOCK", 256)
        monkeypatch.setattr(sparq_module, "PICK_TILE", 256)
        monkeypatch.setattr(sparq_module, "SAMPLE_MIN", 64)
        monkeypatch.setattr(sparq_module, "SAMPLE_MAX", 64)
        monkeypatch.setattr(sparq_module, "PICK_ONESHOT_MAX_WARPS", None)  # writes a tile at a time
    if p == "sample-missed":
        monkeypatch.setattr(sparq_module, "sample_rank", lambda S, k, n, sigmas=None: 1)
    if p == "overflow":
        monkeypatch.setattr(sparq_module, "candidate_cap", lambda S, k, n, sure=False: 16 if sure else k)
    if p == "beyond-slots":
        monkeypatch.setattr(sparq_module, "pick_slots", lambda S, k, n, sure=False, strided=False: 16 if sure else k)
        monkeypatch.setattr(sparq_module, "PICK_TILE", 128)
    if p in ("sure", "sure-missed"):
        monkeypatch.setattr(sparq_module, "SURE_THRESHOLD", True)
    if p == "sure-missed":
        monkeypatch.setattr(sparq_module, "sure_rank", lambda S, k, n, sigmas=None: n)
    if p == "few-bins":
        monkeypatch.setattr(sparq_module.plan, "PICK_BINS_MIN", 16)
        monkeypatch.setattr(sparq_module.plan, "PICK_BINS_MAX", 16)
        monkeypatch.setattr(sparq_module, "PICK_TIES", 32)
    return p


def check(scores, k):
    out = torch.full((*scores.shape[:-1], k), -1, dtype=torch.int32, device=DEV)
    S = scores.shape[-1]
    ws = sparq_module.FilterWorkspace(scores.numel() // S, S, k, DEV)
    topk_indices(scores, k, out=out, ws=ws)
    first = out.clone()
    out.fill_(-1)
    topk_indices(scores, k, out=out, ws=ws)  # a second call on the same workspace stands alone
    # the same values (which of equal scores are taken may differ: atomics order the writes)
    assert torch.equal(torch.gather(scores, -1, first.long()).sort(-1).values,
                       torch.gather(scores, -1, out.long()).sort(-1).values)
    _check_topk(scores, out, k)
    # the step's sample, one key every stride as the score kernel writes it: its own ranks
    # (STRIDED_SIGMAS) and the pick's slots for them, on every path of the fixture
    ws.sample.copy_(scores.reshape(-1, S)[:, ws.strided_positions()])
    out.fill_(-1)
    topk_indices(scores, k, out=out, ws=ws, sampled=True)
    _check_topk(scores, out, k)


def _check_topk(scores, out, k):
    """out holds k distinct in-range positions a row whose values are torch.topk's."""
    S = scores.shape[-1]
    idx = out.long()
    assert ((idx >= 0) & (idx < S)).all(), "unwritten or out-of-range index"
    for row in idx.reshape(-1, k).cpu():
        assert len(set(row.tolist())) == k, "an index was taken twice"
    got = torch.gather(scores, -1, idx).sort(-1).values
    want = torch.topk(scores, k, dim=-1).values.sort(-1).values
    assert torch.equal(got, want)


@pytest.mark.parametrize("rows,S,k", [(3, 1000, 1), (2, 4097, 300), (4, 333, 333), (1, 5000, 4999)])
def test_random_scores(rows, S, k):
    check(torch.randn(rows, S, device=DEV) * 3, k)


def test_filter_tiles_last_first():
    """The filter's tiles in the reverse of the grid's order: the same top k."""
    scores = torch.randn(3, 2500, device=DEV)
    for k in (1, 200):
        out = torch.full((3, k), -1, dtype=torch.int32, device=DEV)
        topk_indices(scores, k, out=out, reverse=True)
        got = torch.gather(scores, -1, out.long()).sort(-1).values
        assert torch.equal(got, torch.topk(scores, k, dim=-1).values.sort(-1).values)
        assert all(len(set(row.tolist())) == k for row in out.cpu())


def test_negative_and_mixed_sign():
    s = -torch.rand(2, 777, device=DEV)  # all negative: the bit order flips
    check(s, 50)
    check(torch.randn(2, 777, device=DEV) * 1e-30, 100)  # tiny magnitudes, denormals


def test_ties_and_infinities():
    s = torch.randint(0, 7, (3, 2100), device=DEV).float()  # many equal values at the threshold
    s[:, -5:] = float("inf")  # forced positions (SparQ's local window)
    check(s, 100)
    check(s, 1000)


def test_duplicated_values():
    """Every value twice: the k-th's bin holds pairs of equal keys, which its ranking
    orders by their place among the bin's keys (the pick by bins, not its fallback)."""
    v = torch.randn(2, 2048, device=DEV)
    check(torch.cat([v, v], -1), 300)
    check(torch.cat([-v.abs(), -v.abs()], -1), 301)  # negative pairs


def test_softmax_like_scores():
    s = torch.softmax(torch.randn(2, 3000, device=DEV) * 4, dim=-1)
    check(s, 187)



def test_filter_keeps_few_candidates_that_hold_the_kth(select_path):
    """On random scores the sampled threshold lies below the k-th largest (at least k
    candidates) with the candidates fitting their room: the pick runs on them, not the
    whole-row fallback; and their keys are exactly the keys at or above the threshold."""
    if select_path != "filter":
        pytest.skip("filter's own thresholds only")
    rows, S, k = 3, 6000, 375
    scores = torch.randn(rows, S, device=DEV)
    # 512 sampled keys: rank 74, about 870 candidates with a spread of 93, so S/4 = 1500 lies
    # 6.8 spreads above (with 256, rank 48: 1125 +- 146, 2.6 spreads, and it failed in CI)
    ws = sparq_module.FilterWorkspace(rows, S, k, DEV, n_sample=512)
    count = sparq_module.filter_candidates(scores, ws).clone()
    assert ((count >= k) & (count <= ws.cap)).all(), (count, ws.cap)
    assert (count < S // 4).all(), "the threshold should leave most keys out"
    for row in range(rows):
        pos = ws.cpos[row, : count[row]].long()
        assert len(set(pos.tolist())) == count[row]
        t = scores[row, pos].min()
        assert int((scores[row] >= t).sum()) == count[row]


def _order_keys(x):
    """The kernels' order keys (_order_key) of fp32 values, as int64 in [0, 2**32)."""
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return torch.where((bits >> 31) != 0, ~bits & 0xFFFFFFFF, bits | 0x80000000)


@pytest.mark.parametrize("sure", [False, True])
@pytest.mark.parametrize("joint", [True, False])
@pytest.mark.parametrize("strided", [False, True])
def test_threshold_kernel_takes_the_ranked_sampled_keys(select_path, monkeypatch, sure, joint, strided):
    """THRESH[row, 0] is the rank-th largest sampled key's top 16 bits (the rest cleared) and
    THRESH[row, 1] the rank_sure-th's rounded up to the next 16-bit step (0xFFFFFFFF without
    the sure threshold), hand-computed here from the sample; both searches in shared rounds
    or one after the other; by the threshold kernel or by the filter's programs (the row's
    first tile storing them). The sample read from the scores in runs, or (strided) given
    as the score kernel writes it, one key every stride, its ranks at STRIDED_SIGMAS: here
    104 and 24 of 256 (at 6 sigmas 120 and 8). Ties at the ranks, mixed signs, +inf in the
    sample."""
    if select_path not in ("filter", "threshold-kernel", "thresholds-in-filter"):
        pytest.skip("the sampled thresholds' own paths only")
    monkeypatch.setattr(sparq_module, "SURE_THRESHOLD", sure)
    monkeypatch.setattr(sparq_module, "JOINT_THRESHOLDS", joint)
    rows, S, k, n = 4, 8000, 2000, 256
    scores = torch.randn(rows, S, device=DEV)
    scores[1] = torch.randint(-3, 4, (S,), device=DEV).float() / 8  # few values: ties at both ranks
    scores[2] = -scores[2].abs()  # all negative
    scores[3, ::40] = float("inf")  # forced positions sampled (stride 31: some of them)
    ws = sparq_module.FilterWorkspace(rows, S, k, DEV, n_sample=n)
    rank, rank_sure = ws.ranks(strided)
    assert (rank, rank_sure) == ((104, 24 if sure else 0) if strided else (120, 8 if sure else 0))
    if strided:
        pos = ws.strided_positions()
        ws.sample.copy_(scores[:, pos])
    else:
        # the sample: runs of 16 consecutive positions, one every 16 * 31
        pos = ws.sample_positions()
        assert ws.sample_run == 16 and pos[15:18].tolist() == [15, 16 * 31, 16 * 31 + 1]
    sparq_module.filter_candidates(scores, ws, sampled=strided)
    got = ws.thresh.to(torch.int64).cpu() & 0xFFFFFFFF
    key16 = _order_keys(scores[:, pos].cpu()) >> 16
    desc = key16.sort(-1, descending=True).values
    assert torch.equal(got[:, 0], desc[:, rank - 1] << 16)
    if sure:
        h = desc[:, rank_sure - 1]
        want = torch.where(h >= 0xFFFF, torch.full_like(h, 0xFFFFFFFF), (h + 1) << 16)
    else:
        want = torch.full((rows,), 0xFFFFFFFF, dtype=torch.int64)
    assert torch.equal(got[:, 1], want)
    assert len(set(desc[1].tolist())) <= 7  # the tied row has few keys


@pytest.mark.parametrize("S,k,sure,kind,branch", [(32768, 2048, False, "normal", True), (16384, 128, False, "normal", True),
                                                 (32768, 8192, True, "normal", True),
                                                 (32768, 2048, False, "softmax sums", True),
                                                 (16384, 1024, False, "softmax sums", True),
                                                 (4096, 2048, False, "normal", True), (8192, 512, False, "window", True),
                                                 (32768, 2048, False, "normal", False),
                                                 (4096, 2048, False, "normal", False)])
def test_pick_bins_count_the_candidates_and_hold_the_kth_among_few(select_path, monkeypatch, S, k, sure, kind, branch):
    """The filter's histogram counts each candidate in its bin (from the threshold up: equal
    in order key where the threshold is positive, else in score; the last for all above),
    and on normal scores, on sums of softmax weights (as SparQ scores a group of heads),
    with the threshold below zero (k = S/2) and with a forced local window (+inf, sampled
    too), the k-th largest lies below the last bin and in a bin of at most PICK_TIES keys:
    the pick ranks them, it does not bisect. (In 24 rows of each case the k-th's bin held
    at most 33 keys of the 64.) The bins by a branch on the row's rule (branch) or by both
    rules computed: the same. With the filter's tiles loaded as vectors and the pick's one
    element a thread (the defaults), or the other way round (SCALAR_LOADS; a hint only the
    compiler reads: on the GPU's tests both ways are compiled and run)."""
    if select_path != "filter":
        pytest.skip("filter's own thresholds only")
    monkeypatch.setattr(sparq_module, "SURE_THRESHOLD", sure)
    monkeypatch.setattr(sparq_module, "BIN_BRANCH", branch)
    monkeypatch.setattr(sparq_module, "FILTER_SCALAR_LOADS", not branch)
    monkeypatch.setattr(sparq_module, "PICK_SCALAR_LOADS", branch)
    rows = 2
    scores = torch.randn(rows, S, device=DEV)
    if kind == "softmax sums":
        scores = torch.softmax(torch.randn(rows, 4, S, device=DEV) * 2.5, dim=-1).sum(1)
    if kind == "window":
        scores[:, -64:] = float("inf")
    ws = sparq_module.FilterWorkspace(rows, S, k, DEV)
    assert ws.bins == {32768: 1024, 16384: 512, 8192: 256, 4096: 256}[S]
    out = torch.full((rows, k), -1, dtype=torch.int32, device=DEV)
    count = sparq_module.filter_candidates(scores, ws, out=out).clone()
    for row in range(rows):
        c = int(count[row])
        x = scores[row, ws.cpos[row, :c].long()]
        x_lo = float(ws.thresh[row, 2:3].view(torch.float32))
        assert (x >= x_lo).all()
        if x_lo > 0:  # bins equal in order key: (key - threshold) >> shift
            key = ws.ckey[row, :c].long() & 0xFFFFFFFF
            shift = int(ws.thresh[row, 3])
            assert 0 <= shift < 32
            b = ((key - (int(ws.thresh[row, 0]) & 0xFFFFFFFF)) >> shift).clamp(max=ws.bins - 1)
        else:  # equal in score, as the kernels bin: in fp32, truncated
            scale = ws.thresh[row, 3:].view(torch.float32)  # [1], on the scores' device
            assert float(scale) > 0
            b = ((x - torch.tensor(x_lo, dtype=torch.float32, device=x.device)) * scale).clamp(max=ws.bins - 1).long()
        assert torch.equal(torch.bincount(b, minlength=ws.bins).to(ws.hist.device), ws.hist[row].long())
        kk = k - int(ws.n_sure[row])
        b_kth = int(b.sort(descending=True).values[kk - 1])
        assert b_kth < ws.bins - 1 and int(ws.hist[row, b_kth]) <= ws.ties, (b_kth, int(ws.hist[row, b_kth]))
    ws.reset()  # as the pick leaves them: the filter alone did not
    topk_indices(scores, k, out=out, ws=ws)
    assert int(ws.hist.abs().sum()) == 0, "the pick leaves the histogram cleared for the next call"
    got = torch.gather(scores, -1, out.long()).sort(-1).values
    assert torch.equal(got, torch.topk(scores, k, dim=-1).values.sort(-1).values)


def test_sure_threshold_writes_keys_above_it_and_keeps_the_band(select_path, monkeypatch):
    """With the sure threshold the filter writes the positions of the keys above it (fewer
    than k) to the output at once, and keeps as candidates only the band below it, which
    holds the k-th largest: together, exactly the keys at or above the lower threshold."""
    if select_path != "filter":
        pytest.skip("filter's own thresholds only")
    monkeypatch.setattr(sparq_module, "SURE_THRESHOLD", True)
    rows, S, k = 3, 8000, 2000
    scores = torch.randn(rows, S, device=DEV)
    ws = sparq_module.FilterWorkspace(rows, S, k, DEV, n_sample=256)
    assert ws.rank_sure > 0
    out = torch.full((rows, k), -1, dtype=torch.int32, device=DEV)
    count = sparq_module.filter_candidates(scores, ws, out=out).clone()
    n_sure = ws.n_sure.clone()
    assert ((n_sure > 0) & (n_sure < k) & (n_sure + count >= k) & (count <= ws.cap)).all(), (n_sure, count, ws.cap)
    band_max = sparq_module.plan.band(S, k, 256, spread=sparq_module.SAMPLE_SIGMAS)  # ~3500 of the 8000
    assert (count < band_max).all(), (count, band_max)
    for row in range(rows):
        sure = out[row, : n_sure[row]].long()
        band = ws.cpos[row, : count[row]].long()
        assert len(set(sure.tolist()) | set(band.tolist())) == n_sure[row] + count[row]
        assert scores[row, sure].min() > scores[row, band].max()
        t = scores[row, band].min()
        assert int((scores[row] >= t).sum()) == n_sure[row] + count[row]


class _LaunchRecorder:
    """A kernel whose launches record their keyword arguments (then run as before)."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kw):
            self.calls.append(kw)
            return launch(*args, **kw)
        return run


def test_the_pick_takes_the_slots_of_its_samples_ranks(select_path, monkeypatch):
    """At S=4096, k=256 the pick's slots are 2048 after a sample read in runs (ranks at 6
    sigmas: 768 candidates expected, 1132 with 3 spreads and 64) and 1024 after the score
    kernel's strided one (4 sigmas: 640, 983): each launch takes its own, and both select
    torch.topk's values."""
    if select_path != "filter":
        pytest.skip("the defaults only")
    rows, S, k = 2, 4096, 256
    scores = torch.randn(rows, S, device=DEV)
    ws = sparq_module.FilterWorkspace(rows, S, k, DEV)
    assert (ws.pick_slots(False), ws.pick_slots(True)) == (2048, 1024)
    rec = _LaunchRecorder(sparq_module._pick_kernel)
    monkeypatch.setattr(sparq_module, "_pick_kernel", rec)
    out = torch.full((rows, k), -1, dtype=torch.int32, device=DEV)
    topk_indices(scores, k, out=out, ws=ws)
    _check_topk(scores, out, k)
    ws.sample.copy_(scores[:, ws.strided_positions()])
    out.fill_(-1)
    topk_indices(scores, k, out=out, ws=ws, sampled=True)
    _check_topk(scores, out, k)
    assert [c["CAPB"] for c in rec.calls] == [2048, 1024]


def test_pick_slots_and_warps(select_path):
    """The pick's register slots lie between k's and the cap, hold the expected candidates,
    and take fewer keys per thread (more warps, up to the one-scan limit) only where the
    rows are at most one per SM."""
    if select_path != "filter":
        pytest.skip("the defaults only")
    from sparq_perf import select_plan
    for S, k in [(32768, 2048), (32768, 128), (131072, 8192), (4096, 2048), (131072, 32768)]:
        n = sparq_module.sample_size(S)
        sure = sparq_module.uses_sure(S, k, n, 32)
        slots, cap = sparq_module.pick_slots(S, k, n, sure), sparq_module.candidate_cap(S, k, n, sure)
        assert slots <= cap and slots >= select_plan.picked_from(S, k, n, sure) and (sure or k <= slots)
        # after the score kernel's strided sample: slots for its ranks' candidates, no more
        strided = sparq_module.pick_slots(S, k, n, sure, strided=True)
        picked = select_plan.picked_from(S, k, n, sure, sparq_module.STRIDED_SIGMAS)
        assert picked <= strided <= slots and (sure or k <= strided)
    # the sure threshold where it shrinks 16384 slots or more: S=128k, k=8192 16384 -> 8192;
    # k=32768 65536 -> 16384; not S=32k, k=4096 (8192 -> 4096). Past SURE_FEW_ROWS rows only
    # where it is less serial work: S=32k and 64k, k=8192 (2048 and 4096 sampled keys against
    # 10496 - 4608 fewer picked), S=128k, k=16384; not S=128k, k=8192 (8192 sampled)
    few, many = select_plan.SURE_FEW_ROWS, select_plan.SURE_FEW_ROWS + 1
    shapes = [(32768, 2048), (32768, 4096), (131072, 8192), (32768, 8192), (65536, 8192), (131072, 16384)]
    assert [sparq_module.uses_sure(S, k, sparq_module.sample_size(S), few) for S, k in shapes] == [
        False, False, True, True, True, True]
    assert [sparq_module.uses_sure(S, k, sparq_module.sample_size(S), many) for S, k in shapes] == [
        False, False, False, True, True, True]
    assert sparq_module.pick_slots(131072, 8192, 8192, True) == 8192
    assert sparq_module.pick_slots(131072, 32768, 8192, True) == 16384
    assert (sparq_module.pick_slots(32768, 2048, 2048), sparq_module.candidate_cap(32768, 2048, 2048)) == (4096, 8192)
    sms = sparq_module.num_sms()
    assert sparq_module.pick_warps(4096, sms) == 8 and sparq_module.pick_warps(4096, sms + 1) == 4
    assert sparq_module.pick_warps(16384, 1) == 16  # 32 warps at 16 keys each: past the one-scan limit
    # the threshold's: one warp up to 256 sampled keys, then 16 keys a thread, at least 4 warps
    assert [sparq_module.threshold_warps(n) for n in (256, 512, 2048, 8192)] == [1, 4, 4, 16]


def test_row_kernels_launch_without_pdl_only_in_their_band(select_path, monkeypatch):
    """The selection's threshold and pick launch with PDL wherever it is on, but those named
    in NO_PDL_ROW_KERNELS do not where the rows per SM lie above NO_PDL_ROWS_PER_SM's first
    bound and at most its second."""
    if select_path != "filter":
        pytest.skip("a launch rule, not a selection path")
    from sparq_perf.kernels import _common
    monkeypatch.setattr(_common, "pdl_on", lambda: True)
    monkeypatch.setattr(_common, "PDL_LAUNCH_EARLY", False)
    on, off = {"PDL": 2, "launch_pdl": True}, {"PDL": 0}
    sms = sparq_module.num_sms()
    assert [sparq_module.row_kernel_pdl("pick", n) for n in (sms // 4, 2 * sms, 16 * sms)] == [on] * 3
    monkeypatch.setattr(sparq_module, "NO_PDL_ROW_KERNELS", ("pick",))
    monkeypatch.setattr(sparq_module, "NO_PDL_ROWS_PER_SM", (0.5, 4.0))
    rows = [sms // 2, sms // 2 + 1, 2 * sms, 4 * sms, 4 * sms + 1]
    assert [sparq_module.row_kernel_pdl("pick", n) for n in rows] == [on, off, off, off, on]
    assert [sparq_module.row_kernel_pdl("threshold", n) for n in rows] == [on] * 5
    monkeypatch.setattr(_common, "pdl_on", lambda: False)
    assert sparq_module.row_kernel_pdl("threshold", 2 * sms) == off
