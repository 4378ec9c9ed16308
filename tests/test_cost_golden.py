"""The cost model against hand-computed values and published anchors."""
import numpy as np
import pytest

from sparq_perf import phases as P
from sparq_perf.cost import paper
from sparq_perf.cost.attention import SparqImpl, attention_costs
from sparq_perf.hardware import get_profile
from sparq_perf.models import Model, get_model
from sparq_perf.predict import evaluate
from sparq_perf.workload import Workload, settings_for_compression


def test_paper_transfer_ratio_matches_the_papers_6_4x():
    # SparQ paper Sec. 3 / SPARQ.md: d_h=128, S=4096, r=32, k=128 -> "6.4x"
    dense = 2 * 4096 * 128 + 2 * 128  # 1,048,832 elements
    sparq = 4096 * 32 + 2 * 128 * 128 + 4 * 128  # 164,352 elements
    assert paper.dense_elements(4096, 128) == dense
    assert paper.sparq_elements(4096, 128, 32, 128) == sparq
    assert dense / sparq == pytest.approx(6.3816, abs=1e-4)


def test_baseline_formulas_by_hand():
    S, d, k = 4096, 128, 128
    assert paper.h2o_elements(S, d, k) == 2 * 128 * 128 + 2 * 128 + 2 * 4096
    assert paper.lm_infinite_elements(S, d, k) == 2 * 128 * 128 + 2 * 128
    assert paper.flexgen_elements(S, d, k) == 4096 * 128 + 128 * 128 + 2 * 128


@pytest.mark.parametrize("c, r, k_of_S", [(1 / 2, 64, 1 / 4), (1 / 4, 32, 1 / 8), (1 / 8, 16, 1 / 16)])
def test_compression_settings_as_in_sparq_gpt_fast(c, r, k_of_S):
    rr, kk = settings_for_compression(128, 4096, c)
    assert (rr, kk) == (r, 4096 * k_of_S)


def _idealised(d_model, g, d_head=128):
    """The paper's App. C layer: 12 d^2 parameters, H*d_h = d, plain MLP sized to fill 12 d^2."""
    H = d_model // d_head
    # qkv d*(d + 2d/g) + out d^2 + mlp 2*d*d_ff = 12 d^2
    d_ff = int(round((12 - 1 - 1 - 2 / g) * d_model / 2))
    return Model("idealised", n_layers=1, d_model=d_model, n_heads=H, n_kv_heads=H // g, d_head=d_head,
                 d_ff=d_ff, vocab=1, gated=False)


@pytest.mark.parametrize("d_model, g, S, expected", [
    (4096, 1, 4096, 7.0),     # Llama 2 7B shapes
    (8192, 8, 4096, 104.0),   # Llama 2 70B shapes
    (8192, 8, 16384, 32.0),   # same at S = 16k
])
def test_large_batch_arithmetic_intensity_matches_appendix_c(d_model, g, S, expected):
    """Multiply-adds per element moved as B grows tends to g + 6/rho, rho = S/(g d)."""
    m = _idealised(d_model, g)
    hw = get_profile("h100-sxm")
    ev = evaluate(m, hw, batch=1e7, seq_len=S, r=16, k=128, methods=("dense",), weight_dtype="bf16", kv_dtype="bf16")
    ops = {n: c for n, (c, *_rest) in ev.methods["dense"].ops.items()
           if n in (P.QKV_PROJ, P.OUT_PROJ, P.MLP, P.DENSE_ATTENTION)}
    weights_and_kv_elements = sum(c.reads.get("weights", 0) + c.reads.get("K", 0) + c.reads.get("V", 0)
                                  for c in ops.values()) / 2
    macs = sum(c.flops for c in ops.values()) / 2
    # The model also counts softmax FLOPs (5 per score against 4*d_h = 512 for the dot
    # products): about 1% above the paper's multiply-adds, so allow 2%.
    assert macs / weights_and_kv_elements == pytest.approx(expected, rel=0.02)


def test_kv_bytes_and_largest_batch_by_hand():
    m, hw = get_model("llama2-7b"), get_profile("h100-sxm")
    ev = evaluate(m, hw, batch=1, seq_len=4096, r=16, k=256)
    per_seq_dense = 32 * 2 * 4096 * 32 * 128 * 2  # layers * (K,V) * S * H_kv * d_h * bytes = 2 GiB
    per_seq_sparq = 32 * 3 * 4096 * 32 * 128 * 2 + 32 * 32 * 128 * 4  # K twice, V, fp32 v_bar
    assert ev.summary["dense.kv_bytes"] == per_seq_dense == 2 * 1024**3
    assert ev.summary["sparq.kv_bytes"] == per_seq_sparq
    usable = 80e9 * 0.92
    weights = 6_738_415_616 * 2
    assert ev.summary["weights_bytes"] == weights
    assert ev.summary["dense.max_batch"] == int((usable - weights) // per_seq_dense) == 27
    assert ev.summary["sparq.max_batch"] == int((usable - weights) // per_seq_sparq) == 18


def test_dense_attention_bytes_by_hand():
    w = Workload(batch=2, seq_len=1000, n_heads=32, n_kv_heads=8, d_head=128, kv_bytes=2, act_bytes=2)
    c = attention_costs("dense", w)[P.DENSE_ATTENTION]
    # K and V: B*H_kv*S*d_h*e each; q read and out written: B*H*d_h*a each
    assert c.bytes_read == 2 * (2 * 8 * 1000 * 128 * 2) + 2 * 32 * 128 * 2
    assert c.bytes_written == 2 * 32 * 128 * 2


def test_sparq_phase_bytes_by_hand(monkeypatch):
    B, S, Hq, Hkv, d, r, k = 1, 4096, 32, 32, 128, 32, 128
    w = Workload(B, S, Hq, Hkv, d, r, k, 0, 2.0, 2.0)
    c = attention_costs("sparq", w, SparqImpl(scores_in_memory=True, select_filter=False))
    n = B * Hkv
    assert c[P.SPARQ_SCORE].reads == {"q": n * 128 * 2, "K_r_columns": n * S * r * 2}
    assert c[P.SPARQ_SCORE].writes == {"softmax_stats": n * 8, "scores": n * S * 4}  # no sample: no filter selection
    assert c[P.SPARQ_SELECT].bytes == n * (S * 4 + k * 4)
    assert c[P.SPARQ_ATTEND].bytes_read == n * (k * 4 + 2 * k * d * 2 + d * 2 + 8 + d * 4)
    # our selection at S = 4096: a sample of 256 keys (one in 16), written by the score
    # kernel (4 B each, one key every stride) and read back by the threshold; k = 128 gives
    # 256 * 128 / 4096 = 8 expected sampled keys above the k-th, so the threshold's rank is
    # ceil(8 + 4 * sqrt(8) + 8) = 28 (4 sigmas: a strided sample) and 28/256 of the row, 448
    # keys, are candidates: written as key and position packed in 8 B and read back once; the pick's
    # histogram, 4096 / 32 = 128 -> at least 256 bins of 4 B, read and cleared; the threshold
    # row of four 4-byte values
    ours = attention_costs("sparq", w)
    assert ours[P.SPARQ_SCORE].writes == {"softmax_stats": n * 8, "scores": n * S * 4, "sample": n * 256 * 4}
    sel = ours[P.SPARQ_SELECT]
    assert sel.reads == {"scores": n * S * 4, "sample": n * 256 * 4, "candidates": n * 448 * 8,
                         "histogram": n * 256 * 4}
    assert sel.writes == {"indices": n * k * 4, "candidates": n * 448 * 8, "threshold": n * 16,
                          "histogram": n * 256 * 4}
    assert sel.launches == 3
    # a sample read from the scores: runs of 16 consecutive keys (64 B, two whole sectors), 4 B
    # a key; its rank at 6 sigmas, ceil(8 + 6 * sqrt(8) + 8) = 33: 33/256 of the row, 528 keys
    apart = attention_costs("sparq", w, SparqImpl(sample_in_score=False))
    assert apart[P.SPARQ_SELECT].reads["sample"] == n * 256 * 4 and "sample" not in apart[P.SPARQ_SCORE].writes
    assert apart[P.SPARQ_SELECT].reads["candidates"] == n * 528 * 8
    # runs of 4 keys (16 B) would cost a 32-byte sector a run: 8 B a key
    from sparq_perf import select_plan
    monkeypatch.setattr(select_plan, "SAMPLE_RUN_KEYS", 4)
    assert attention_costs("sparq", w, SparqImpl(sample_in_score=False))[P.SPARQ_SELECT].reads["sample"] == n * 256 * 8
    monkeypatch.undo()
    fused = attention_costs("sparq", w, SparqImpl(scores_in_memory=False))
    assert c[P.SPARQ_SCORE].bytes - fused[P.SPARQ_SCORE].bytes == n * S * 4
    assert fused[P.SPARQ_SELECT].bytes_read == 0
    # k = S/16 at S = 128k: 8192 sampled keys, 512 expected above the k-th largest (spread
    # sqrt(512) = 22.63): threshold rank ceil(512 + 4 * 22.63 + 8) = 611, sure threshold rank
    # floor(512 - 4 * 22.63 - 8) = 413 (the step's strided sample: 4 sigmas). The keys above
    # the sure one are written as indices; the band between, (611 - 413) / 8192 of the row =
    # 3168 keys, are the candidates (not the 611 * 16 = 9776 at or above the threshold), and
    # the threshold bisects twice
    big = attention_costs("sparq", Workload(B, 131072, Hq, Hkv, d, 16, 8192, 0, 2.0, 2.0))[P.SPARQ_SELECT]
    assert big.reads["candidates"] == n * 3168 * 8 and big.writes["candidates"] == n * 3168 * 8
    # The pick's register slots: the band's spread is 131072 * sqrt(q (1 - q) / 8192) = 222.4
    # for q = 198 / 8192, so 3168 + 3 * 222.4 + 64 = 3899 -> 4096 slots (within its room in
    # memory, and whether the sure threshold is used, at 6 sigmas: ranks 656 and 368, the band
    # 4608 keys, spread 266.7 for q = 288 / 8192, 4608 + 6 * 266.7 + 64 = 6272 -> 8192);
    # serial items 4096 + 2 * 8192. The filter: 256 tiles of 512 per row, each doing its
    # counts and writes twice
    assert big.serial_items == 4096 + 2 * 8192
    (grid,) = big.grids
    assert float(grid.programs(132)) == n * 256 * 2
    # ... for at most 32 rows (select_plan.SURE_FEW_ROWS). At 64 rows the band and the second
    # bisection (4608 + 8192 items) are more serial work than the candidates (10496 at 6
    # sigmas): no sure threshold, the 9776 candidates at 4 sigmas picked (spread 131072 *
    # sqrt(p (1 - p) / 8192) = 380.5 for p = 611 / 8192: 9776 + 3 * 380.5 + 64 = 10981 -> 16384
    # slots), the sample bisected once, each of the 256 filter tiles done once
    many = attention_costs("sparq", Workload(2, 131072, 32, 32, d, 16, 8192, 0, 2.0, 2.0))[P.SPARQ_SELECT]
    assert many.reads["candidates"] == 64 * 9776 * 8 and many.serial_items == 16384 + 8192
    assert float(many.grids[0].programs(132)) == 64 * 256


def test_gqa_shares_score_and_gather_traffic_across_the_group():
    mha = Workload(1, 8192, 32, 32, 128, 16, 512, 0, 2.0, 2.0)
    gqa = Workload(1, 8192, 32, 8, 128, 16, 512, 0, 2.0, 2.0)
    one_pass = SparqImpl(gqa_score_passes=1)
    cm, cg = attention_costs("sparq", mha, one_pass), attention_costs("sparq", gqa, one_pass)
    # one i1 and one i2 per KV head: K^T rows and gathered K/V rows scale with H_kv, not H
    assert cg[P.SPARQ_SCORE].reads["K_r_columns"] * 4 == cm[P.SPARQ_SCORE].reads["K_r_columns"]
    # our kernel reads the r rows twice under GQA (per-head softmax statistics first)
    two = attention_costs("sparq", gqa)[P.SPARQ_SCORE].reads["K_r_columns"]
    assert two == 2 * cg[P.SPARQ_SCORE].reads["K_r_columns"]
    assert cg[P.SPARQ_ATTEND].reads["K_rows"] * 4 == cm[P.SPARQ_ATTEND].reads["K_rows"]
    # one head per group: the attend's last program merges (one launch); g = 4: a merge launch
    assert (cm[P.SPARQ_ATTEND].launches, cg[P.SPARQ_ATTEND].launches) == (1, 2)
    # q is per query head: the same in both
    assert cg[P.SPARQ_SCORE].reads["q"] == cm[P.SPARQ_SCORE].reads["q"]
    # but scores are summed over the group: one score row per KV head
    assert cg[P.SPARQ_SCORE].writes["scores"] * 4 == cm[P.SPARQ_SCORE].writes["scores"]


def test_full_r_and_k_costs_at_least_dense():
    m, hw = get_model("llama3-8b"), get_profile("h100-sxm")
    S = np.array([1024, 4096, 32768])
    ev = evaluate(m, hw, batch=4, seq_len=S, r=m.d_head, k=S)
    assert np.all(ev.summary["sparq.attention_bytes"] >= ev.summary["dense.attention_bytes"])
    assert np.all(ev.summary["sparq.attention_time_s"] >= ev.summary["dense.attention_time_s"])


def test_time_grows_with_sequence_length():
    m, hw = get_model("llama2-7b"), get_profile("h100-sxm")
    S = np.array([1024, 2048, 4096, 16384, 65536, 131072])
    r, k = settings_for_compression(128, S, 1 / 8)
    ev = evaluate(m, hw, batch=8, seq_len=S, r=r, k=k)
    for key in ("dense.attention_time_s", "sparq.attention_time_s", "dense.tpot_s", "sparq.tpot_s"):
        assert np.all(np.diff(ev.summary[key]) > 0), key


def test_vectorized_equals_scalar():
    m, hw = get_model("mistral-7b"), get_profile("h100-sxm")
    B = np.array([1, 8, 64])[:, None]
    S = np.array([4096, 32768])[None, :]
    ev = evaluate(m, hw, batch=B, seq_len=S, r=16, k=128)
    for i, b in enumerate([1, 8, 64]):
        for j, s in enumerate([4096, 32768]):
            one = evaluate(m, hw, batch=b, seq_len=s, r=16, k=128)
            assert ev.summary["sparq.tpot_s"][i, j] == pytest.approx(float(one.summary["sparq.tpot_s"]))


def test_speedup_approaches_byte_ratio_at_long_context():
    """At very long S attention dominates; SparQ's speedup tends to dense bytes / SparQ bytes."""
    m, hw = get_model("llama2-7b"), get_profile("h100-sxm")
    ev = evaluate(m, hw, batch=64, seq_len=1024 * 1024, r=16, k=65536)
    ratio = ev.summary["dense.attention_bytes"] / ev.summary["sparq.attention_bytes"]
    assert ev.summary["sparq.speedup_attention"] == pytest.approx(ratio, rel=0.01)


def test_selection_serial_work_is_sample_plus_pick_slots_by_hand():
    """S = 16k, k = 1024: a 1024-key sample (one in 16, the score kernel's), threshold at
    sampled rank ceil(64 + 4 * 8 + 8) = 104, so 16384 * 104 / 1024 = 1664 candidates, spread
    16384 * sqrt(p (1 - p) / 1024) = 154.7 for p = 104 / 1024; the pick holds
    1664 + 3 * 154.7 + 64 = 2192 -> 4096 slots (and 16384 / 32 = 512 bins, not serial
    work). Each of the 4 rows' programs goes through 1024 sampled keys and 4096 slots; the
    filter runs 32 tiles of 512 per row."""
    from sparq_perf.cost.attention import select_cost

    c = select_cost(P.SPARQ_SELECT, 4, 16384, 1024.0, SparqImpl())
    assert float(c.serial_rows) == 4 and float(c.serial_items) == pytest.approx(1024 + 4096)
    assert float(c.reads["histogram"]) == 4 * 512 * 4
    assert float(c.grids[0].programs(132)) == 4 * 32
    assert float(c.writes["candidates"]) == pytest.approx(4 * 1664 * 8)


def test_attend_grid_caps_blocks_a_program_where_rows_are_few():
    """The attend's splits (kernels' grid and the model's programs, one rule), with a cap of 8
    blocks a program (SparqImpl.attend_max_blocks_few; off by default): 32 rows of
    k = 8192 in blocks of 64 (128 blocks) on 132 units. 2 waves ask floor((264 + 31) / 32) = 9
    splits (15 blocks each); at most 8 blocks a program asks
    ceil(128 / 8) = 16, so 16 splits, 512 programs. At k = 2048 (32 blocks) the 9 splits hold
    4 blocks each and stand. 512 rows (not few) keep 4 waves: floor((528 + 511) / 512) = 2."""
    from sparq_perf.cost.base import SplitGrid, splits

    assert splits(32, 8192, 64, 2.0, 132) == 9
    assert splits(32, 8192, 64, 2.0, 132, max_blocks=8.0) == 16
    assert splits(32, 2048, 64, 2.0, 132, max_blocks=8.0) == 9
    impl = SparqImpl(attend_max_blocks_few=8.0)
    grid = SplitGrid(32, 8192, impl.attend_block_k, impl.attend_waves, impl.attend_waves_few,
                     max_blocks_few=impl.attend_max_blocks_few)
    assert grid.programs(132) == 32 * 16
    many = SplitGrid(512, 8192, impl.attend_block_k, impl.attend_waves, impl.attend_waves_few,
                     max_blocks_few=impl.attend_max_blocks_few)
    assert many.programs(132) == 512 * 2
    assert SplitGrid(32, 8192, 64, 4.0, 2.0).programs(132) == 32 * 9  # no cap (the default)
    assert np.array_equal(SplitGrid(np.array([32, 512]), 8192, 64, 4.0, 2.0, max_blocks_few=8.0).programs(132),
                          [32 * 16, 512 * 2])


def test_sample_runs_by_hand():
    """Runs of the sample read from the scores: 16 keys, fewer only where the sample is
    smaller (the largest power of two in it), one key where the sample is the whole row."""
    from sparq_perf import select_plan
    assert select_plan.sample_run(16384, 1024) == 16
    assert select_plan.sample_run(8000, 10) == 8
    assert select_plan.sample_run(300, 300) == 1
    assert list(select_plan.sample_run([4096, 100], [256, 100])) == [16, 1]
