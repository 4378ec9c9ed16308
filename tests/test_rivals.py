"""SparQ's rivals in the cost model: hand-computed bytes, the SparQ paper's element formulas
(Table 1: H2O, LM-Infinite, FlexGen) as anchors, invariants, and the CLI."""
import csv
import io
import json

import numpy as np
import pytest

from sparq_perf import phases as P
from sparq_perf.compare import compare_rows
from sparq_perf.cost import paper
from sparq_perf.cost.attention import SparqImpl, attention_costs
from sparq_perf.cost.rivals import (DoubleSparsityImpl, H2OImpl, QuestImpl, element_ratio, params_for_compression,
                                    sectors)
from sparq_perf.hardware import get_profile
from sparq_perf.memory import kv_bytes_per_sequence, kv_terms_per_sequence
from sparq_perf.models import get_model
from sparq_perf.predict import KNOWN_METHODS, Settings, evaluate, predict
from sparq_perf.workload import Workload

B, S, H, D, E = 1, 4096, 32, 128, 2  # Llama 2 7B attention shapes, bf16
N = B * H  # (sequence, KV head) pairs


def wl(r=16, k=256, S=S, n_kv=H, batch=B):
    return Workload(batch, S, H, n_kv, D, r, k, 0, 2.0, 2.0)


def total(costs, names):
    return sum(float(costs[n].bytes) for n in names)


# ---------------------------------------------------------------------------------------
# Golden bytes by hand

def test_quest_bytes_by_hand():
    c = attention_costs("quest", wl(k=256), QuestImpl(page_size=16, select_filter=False))  # one-pass selection
    pages, chosen = 4096 // 16, 256 // 16  # 256 pages, 16 chosen
    assert c[P.QUEST_SCORE].reads == {"q": N * D * 2, "page_minmax": N * pages * 2 * D * 2, "new_k": N * D * 2}
    assert c[P.QUEST_SCORE].writes == {"page_minmax": N * 2 * D * 2, "scores": N * pages * 4}
    assert c[P.QUEST_SELECT].reads == {"scores": N * pages * 4}
    assert c[P.QUEST_SELECT].writes == {"indices": N * chosen * 4}
    assert c[P.QUEST_ATTEND].reads == {"indices": N * chosen * 4, "K_rows": N * 256 * D * 2, "V_rows": N * 256 * D * 2,
                                       "q": N * D * 2}
    assert c[P.QUEST_ATTEND].writes == {"out": N * D * 2}
    # 4,194,304 bytes of metadata against 33,554,432 of K: 2/P
    assert c[P.QUEST_SCORE].reads["page_minmax"] == 4_194_304


@pytest.mark.parametrize("Pg", [8, 16, 32, 64])
def test_quest_metadata_traffic_is_2_over_P_of_K(Pg):
    c = attention_costs("quest", wl(k=512), QuestImpl(page_size=Pg))
    k_bytes = attention_costs("dense", wl())[P.DENSE_ATTENTION].reads["K"]
    assert c[P.QUEST_SCORE].reads["page_minmax"] == pytest.approx(2 / Pg * k_bytes)


def test_quest_first_two_layers_run_dense():
    m, hw = get_model("llama2-7b"), get_profile("h100-sxm")
    ev = evaluate(m, hw, batch=1, seq_len=S, r=16, k=256, methods=("dense", "quest"))
    ops = ev.methods["quest"].ops
    assert ops[P.DENSE_ATTENTION][2] == 2 and all(ops[p][2] == 30 for p in P.QUEST_PHASES)
    assert ops[P.APPEND][2] == 32
    quest_layer = sum(float(ops[p][0].bytes) for p in P.QUEST_PHASES)
    dense_layer = float(ops[P.DENSE_ATTENTION][0].bytes)
    assert ev.summary["quest.attention_bytes"] == pytest.approx((2 * dense_layer + 30 * quest_layer) / 32)
    # the combined quest_decode row is the same layer average
    rows = predict(Settings(m, hw, seq_len=S, methods=("quest",))).rows
    row = next(r for r in rows if r["method"] == "quest" and r["phase"] == "quest_decode")
    assert row["bytes_read"] + row["bytes_written"] == pytest.approx(ev.summary["quest.attention_bytes"])


@pytest.mark.parametrize("bits, label_row_bytes", [(16, 32), (4, 32)])  # 8 B of 4-bit labels still cost a sector
def test_double_sparsity_bytes_by_hand(bits, label_row_bytes):
    c = attention_costs("double-sparsity", wl(r=16, k=256), DoubleSparsityImpl(label_bits=bits, select_filter=False))
    el = bits / 8
    assert c[P.DS_SCORE].reads == {"q": N * D * 2, "label_rows": N * S * 16 * el}
    assert c[P.DS_SCORE].writes == {"scores": N * S * 4}
    assert c[P.DS_SELECT].bytes == N * (S * 4 + 256 * 4)
    assert c[P.DS_ATTEND].bytes_read == N * (256 * 4 + 2 * 256 * D * 2 + D * 2)
    assert c[P.APPEND].writes["label_row"] == N * label_row_bytes


@pytest.mark.parametrize("r, row_bytes", [(4, 32), (8, 32), (16, 32), (24, 64), (32, 64), (128, 256)])
def test_loki_reads_whole_sectors_of_the_first_r_dims(r, row_bytes):
    """The first r rotated dims are r*2 contiguous bytes at the start of each 256-byte row of K."""
    c = attention_costs("loki", wl(r=r, k=256))
    assert c[P.LOKI_SCORE].reads["K_first_r_dims"] == N * S * row_bytes
    # one d_h x d_h basis per KV head, shared by the batch
    assert c[P.LOKI_SCORE].reads["pca_basis"] == H * D * D * 2
    assert attention_costs("loki", wl(r=r, batch=8))[P.LOKI_SCORE].reads["pca_basis"] == H * D * D * 2
    assert c[P.LOKI_ATTEND].reads["K_rows"] == N * 256 * D * 2  # exact attention on full rotated rows


def test_loki_at_64_byte_sectors():
    from sparq_perf.cost.rivals import LokiImpl

    c = attention_costs("loki", wl(r=16), LokiImpl(sector_bytes=64))
    assert c[P.LOKI_SCORE].reads["K_first_r_dims"] == N * S * 64
    assert sectors(40, 32) == 64 and sectors(64, 32) == 64


def test_sparq_1xk_is_sparq_with_k_once():
    once = attention_costs("sparq-1xk", wl(r=16))
    assert "kt_column" not in once[P.APPEND].writes
    # 16 scattered 2-byte elements of each 256-byte row, a sector each: the whole row
    assert once[P.SPARQ_SCORE].reads["K_r_columns"] == N * S * 256
    assert attention_costs("sparq", wl(r=4), SparqImpl(k_transposed=False))[P.SPARQ_SCORE].reads["K_r_columns"] == \
        attention_costs("sparq-1xk", wl(r=4))[P.SPARQ_SCORE].reads["K_r_columns"] == N * S * 4 * 32


# ---------------------------------------------------------------------------------------
# The SparQ paper's element formulas (Table 1) as anchors

def _paper_part(c, names):
    """Bytes of the terms the paper's formulas count, by (phase, 'r'/'w', term)."""
    return sum(float(c[p].reads[t] if rw == "r" else c[p].writes[t]) for p, rw, t in names)


NEW_KV = [(P.APPEND, "w", "k_row"), (P.APPEND, "w", "v_row")]


@pytest.mark.parametrize("S_, k", [(4096, 128), (4096, 1024), (32768, 2048)])
def test_h2o_reduces_to_the_papers_formula_plus_named_extras(S_, k):
    """H2O = 2*k*d_h + 2*d_h + 2*S elements: K and V of k kept rows, the new k and v, and one
    accumulated score per position seen read and written (scores at the element size)."""
    c = attention_costs("h2o", wl(k=k, S=S_), H2OImpl(bookkeeping="sequence", score_bytes=E))
    counted = NEW_KV + [(P.H2O_ATTEND, "r", "K_rows"), (P.H2O_ATTEND, "r", "V_rows"),
                        (P.H2O_ATTEND, "r", "acc_scores"), (P.H2O_ATTEND, "w", "acc_scores")]
    assert _paper_part(c, counted) == N * paper.h2o_elements(S_, D, k) * E
    extras = {(P.APPEND, "r", "new_kv"): N * 2 * D * 2, (P.H2O_ATTEND, "r", "q"): N * D * 2,
              (P.H2O_ATTEND, "w", "out"): N * D * 2, (P.H2O_EVICT, "r", "acc_scores"): N * k * E,
              (P.H2O_EVICT, "w", "slot"): N * 4, (P.H2O_EVICT, "w", "new_score"): N * E}
    assert _paper_part(c, extras) == sum(extras.values())
    everything = total(c, [P.APPEND, P.H2O_ATTEND, P.H2O_EVICT])
    assert everything == N * paper.h2o_elements(S_, D, k) * E + sum(extras.values())


def test_h2o_default_keeps_scores_only_for_kept_positions():
    short, long = (attention_costs("h2o", wl(k=512, S=s)) for s in (4096, 65536))
    for p in (P.H2O_ATTEND, P.H2O_EVICT):
        assert short[p].bytes == long[p].bytes  # eviction: nothing grows with S
    assert short[P.H2O_ATTEND].reads["acc_scores"] == N * 512 * 4


@pytest.mark.parametrize("S_, k", [(4096, 128), (32768, 4096)])
def test_streaming_llm_reduces_to_lm_infinite(S_, k):
    c = attention_costs("streaming-llm", wl(k=k, S=S_))
    counted = NEW_KV + [(P.STREAM_ATTEND, "r", "K_rows"), (P.STREAM_ATTEND, "r", "V_rows")]
    assert _paper_part(c, counted) == N * paper.lm_infinite_elements(S_, D, k) * E
    extras = N * 2 * D * 2 + N * D * 2 + N * D * 2  # new k,v read; q; out
    assert total(c, [P.APPEND, P.STREAM_ATTEND]) == N * paper.lm_infinite_elements(S_, D, k) * E + extras


def test_flexgen_reduces_to_its_formula():
    k = 256
    c = attention_costs("flexgen", wl(k=k))
    counted = NEW_KV + [(P.FLEXGEN_SCORE, "r", "K"), (P.FLEXGEN_ATTEND, "r", "V_rows")]
    assert _paper_part(c, counted) == N * paper.flexgen_elements(S, D, k) * E
    assert "K_rows" not in c[P.FLEXGEN_ATTEND].reads


# ---------------------------------------------------------------------------------------
# Invariants

def test_sparq_and_double_sparsity_differ_only_by_label_cache_and_kt_terms():
    """At equal r, k and a 16-bit label cache the score, select and gather traffic is equal;
    what differs is SparQ's K^T (its append column, its memory), its v_bar and alpha
    statistics (mean-value mixing), against Double Sparsity's label cache."""
    w = wl(r=16, k=256)
    sq, ds = attention_costs("sparq", w), attention_costs("double-sparsity", w, DoubleSparsityImpl(label_bits=16))
    assert sq[P.SPARQ_SCORE].reads["K_r_columns"] == ds[P.DS_SCORE].reads["label_rows"]
    assert sq[P.SPARQ_SELECT].reads == ds[P.DS_SELECT].reads and sq[P.SPARQ_SELECT].writes == ds[P.DS_SELECT].writes
    for a, b in ((P.SPARQ_ATTEND, P.DS_ATTEND),):
        shared = set(sq[a].reads) & set(ds[b].reads)
        assert all(sq[a].reads[t] == ds[b].reads[t] for t in shared)
    only_sparq = {t for p in (P.APPEND, *P.SPARQ_PHASES) for t in {**sq[p].reads, **sq[p].writes}} - \
        {t for p in (P.APPEND, *P.DS_PHASES) for t in {**ds[p].reads, **ds[p].writes}}
    only_ds = {t for p in (P.APPEND, *P.DS_PHASES) for t in {**ds[p].reads, **ds[p].writes}} - \
        {t for p in (P.APPEND, *P.SPARQ_PHASES) for t in {**sq[p].reads, **sq[p].writes}}
    assert only_sparq == {"K_r_columns", "kt_column", "v_bar", "softmax_stats"}
    assert only_ds == {"label_rows", "label_row"}
    diff = total(sq, [P.APPEND, *P.SPARQ_PHASES]) - total(ds, [P.APPEND, *P.DS_PHASES])
    kt_vbar_stats = (sq[P.APPEND].writes["kt_column"] + sq[P.APPEND].reads["v_bar"] + sq[P.APPEND].writes["v_bar"]
                     + sq[P.SPARQ_ATTEND].reads["v_bar"] + sq[P.SPARQ_ATTEND].reads["softmax_stats"]
                     + sq[P.SPARQ_SCORE].writes["softmax_stats"] - ds[P.APPEND].writes["label_row"])
    assert diff == pytest.approx(float(kt_vbar_stats))
    # memory: K^T and v_bar against the label cache
    m = get_model("llama2-7b")
    tsq = kv_terms_per_sequence(m, S, 2.0, "sparq")
    tds = kv_terms_per_sequence(m, S, 2.0, "double-sparsity", r=16, impl=DoubleSparsityImpl(label_bits=16))
    assert tsq["K"] == tds["K"] and tsq["V"] == tds["V"]
    assert set(tsq) ^ set(tds) == {"KT", "v_bar", "label_cache"}
    assert tds["label_cache"] == 32 * S * 32 * 16 * 2  # layers * S * H_kv * r * 2 bytes


def test_eviction_memory_shrinks_with_k():
    m = get_model("llama2-7b")
    ks = np.array([64, 256, 1024, 4096])
    for method in ("h2o", "streaming-llm"):
        kv = kv_bytes_per_sequence(m, 32768, 2.0, method, k=ks)
        assert np.all(np.diff(kv) > 0) and np.all(kv < kv_bytes_per_sequence(m, 32768, 2.0, "dense"))
    # by hand: K and V of k positions, plus H2O's fp32 score per kept position and KV head
    assert kv_bytes_per_sequence(m, 32768, 2.0, "streaming-llm", k=1024) == 32 * 2 * 1024 * 32 * 128 * 2
    assert kv_bytes_per_sequence(m, 32768, 2.0, "h2o", k=1024) == 32 * (2 * 1024 * 32 * 128 * 2 + 1024 * 32 * 4)
    hw = get_profile("h100-sxm")
    ev = evaluate(m, hw, batch=1, seq_len=32768, r=16, k=2048, methods=("dense", "h2o"), params={"h2o": {"k": ks}})
    assert np.all(np.diff(ev.summary["h2o.max_batch"]) < 0) and np.all(ev.summary["h2o.max_batch"] > 3)


def test_quest_and_label_cache_memory_by_hand():
    m = get_model("llama2-7b")  # 32 layers, 32 KV heads, d_h 128
    t = kv_terms_per_sequence(m, 4096, 2.0, "quest", impl=QuestImpl(page_size=16, dense_layers=2))
    assert t["page_minmax"] == 30 * 256 * 2 * 32 * 128 * 2  # quest layers * pages * (min, max) * row
    t4 = kv_terms_per_sequence(m, 4096, 2.0, "double-sparsity", r=8, impl=DoubleSparsityImpl(label_bits=4))
    assert t4["label_cache"] == 32 * 4096 * 32 * 8 * 0.5
    assert kv_bytes_per_sequence(m, 4096, 2.0, "loki") == kv_bytes_per_sequence(m, 4096, 2.0, "dense")


@pytest.mark.parametrize("method", ["quest", "double-sparsity", "loki"])
def test_full_settings_cost_at_least_dense(method):
    w = wl(r=D, k=S)
    dense = total(attention_costs("dense", w), [P.DENSE_ATTENTION])
    phases = {"quest": P.QUEST_PHASES, "double-sparsity": P.DS_PHASES, "loki": P.LOKI_PHASES}[method]
    assert total(attention_costs(method, w), phases) >= dense


@pytest.mark.parametrize("c", [1 / 2, 1 / 4, 1 / 8])
def test_settings_reach_the_target_compression(c):
    S_ = np.array([16384, 131072])
    for method in ("sparq", "quest", "double-sparsity", "loki", "h2o", "streaming-llm"):
        p = params_for_compression(method, 128, S_, c)
        assert np.all(p["reachable"])
        assert element_ratio(method, S_, 128, p["r"], p["k"]) == pytest.approx(c, rel=0.01), method


def test_settings_by_hand_at_one_eighth():
    S_ = 32768
    assert {m: (int(params_for_compression(m, 128, S_, 1 / 8)["r"]), int(params_for_compression(m, 128, S_, 1 / 8)["k"]))
            for m in ("sparq", "loki", "double-sparsity", "quest", "streaming-llm", "h2o")} == {
        "sparq": (16, 2048), "loki": (16, 2048), "double-sparsity": (16, 2048),
        "quest": (16, 2048),  # k = S*(1/8 - 1/16)
        "streaming-llm": (16, 4096),
        "h2o": (16, 4032),  # k = S/8 / (1 + 4/256): the fp32 score read and written per kept position
    }
    assert int(params_for_compression("double-sparsity", 128, S_, 1 / 8, impl=DoubleSparsityImpl(label_bits=4))["r"]) == 64
    assert not params_for_compression("quest", 128, S_, 1 / 16)["reachable"]


def test_rivals_vectorized_equal_scalar():
    m, hw = get_model("llama3-8b"), get_profile("h100-sxm")
    S_ = np.array([4096, 32768, 131072])
    rows = compare_rows(m, hw, seq_len=S_, batch=4, compression=1 / 8)
    for s in S_:
        one = compare_rows(m, hw, seq_len=int(s), batch=4, compression=1 / 8)
        for a in one:
            b = next(r for r in rows if r["method"] == a["method"] and r["seq_len"] == s)
            assert b["tpot_s"] == pytest.approx(a["tpot_s"]) and b["max_batch"] == a["max_batch"]


def test_compare_rows_over_batch_compression_and_devices_equal_one_at_a_time():
    """One call over batches, compressions and devices gives exactly the rows of one call each."""
    m, hws = get_model("llama2-7b"), [get_profile("h100-sxm"), get_profile("l4")]
    S_, batches, cs = [2048, 65536], [1, 8, 64], [1 / 2, 1 / 16]
    methods = ("sparq", "quest", "h2o", "flexgen")
    rows = compare_rows(m, hws, seq_len=S_, batch=batches, compression=cs, methods=methods)
    want = [row for hw in hws for method in ("dense",) + methods for c in cs for b in batches
            for row in compare_rows(m, hw, seq_len=S_, batch=b, compression=c, methods=methods)
            if row["method"] == method]
    assert rows == want and len(rows) == 2 * 5 * 2 * 3 * 2
    assert [type(v) for v in rows[-1].values()] == [type(v) for v in want[-1].values()]


def test_compare_rows_have_every_column_and_say_eviction_is_final():
    from sparq_perf.compare import COLUMNS

    rows = compare_rows(get_model("llama2-7b"), get_profile("h100-sxm"), seq_len=32768, compression=1 / 8)
    assert [r["method"] for r in rows] == ["dense", "sparq", "sparq-1xk", "quest", "double-sparsity", "loki", "h2o",
                                           "streaming-llm"]
    for r in rows:
        assert set(r) == set(COLUMNS)
        assert r["evicts"] == (r["method"] in ("h2o", "streaming-llm"))
        assert ("cannot be recovered" in r["note"]) == r["evicts"]
    by = {r["method"]: r for r in rows}
    assert by["h2o"]["max_batch"] > 5 * by["dense"]["max_batch"]
    assert by["sparq"]["speedup_attention"] > by["sparq-1xk"]["speedup_attention"]


# ---------------------------------------------------------------------------------------
# The real CLI

from test_cli import run  # noqa: E402  (runs the installed CLI from a neutral folder)


def test_issue_example_prints_the_comparison():
    p = run("predict", "--gpu", "h100-sxm", "--seq", "32k", "--method", "sparq,quest,double-sparsity,loki,h2o",
            "--compression", "1/8")
    assert p.returncode == 0, p.stderr
    for need in ("Methods at compression 0.125", "Quest", "Double Sparsity", "Loki", "H2O", "quest_score", "ds_attend",
                 "loki_score", "h2o_evict", "P=16 k=2048", "evicted tokens cannot be recovered"):
        assert need in p.stdout, need


def test_bad_method_is_one_line_listing_the_known_ones():
    p = run("predict", "--method", "sparq,qwest")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "unknown method 'qwest'" in lines[0] and "did you mean quest" in lines[0]
    for m in KNOWN_METHODS:
        assert m in lines[0]
    assert run("compare", "--method", "nope").returncode == 2


def test_compare_json_and_csv():
    p = run("compare", "--seq", "4k,32k", "--method", "sparq,quest,h2o", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert {(r["method"], r["seq_len"]) for r in d} >= {("quest", 4096), ("h2o", 32768), ("dense", 4096)}
    p = run("compare", "--method", "ds,lm-infinite", "--label-bits", "4", "--csv")
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["method"] for r in rows] == ["dense", "double-sparsity", "streaming-llm"]
    assert rows[1]["params"] == "r=64x4b k=2048"


def test_predict_json_carries_each_methods_settings_and_rows():
    p = run("predict", "--seq", "32k", "--method", "quest,loki", "--page-size", "32", "--json")
    d = json.loads(p.stdout)
    assert d["methods"]["quest"] == {"r": None, "k": 32768 * (1 / 8 - 1 / 32) // 32 * 32, "reachable": True}
    assert {r["phase"] for r in d["rows"] if r["method"] == "quest"} >= {"quest_score", "dense_attention", "quest_decode"}
    assert d["comparison"][0]["method"] == "dense"
