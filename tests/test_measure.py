"""The parts of `measure` that need no GPU: the sweep, profile matching, measured rows beside
their predicted twins, and the one-line refusal without a GPU."""
import subprocess
import sys
import tempfile

import pytest

from sparq_perf import phases as P
from sparq_perf import rows as R
from sparq_perf.hardware import get_profile
from sparq_perf.measure.gpu import match_profile
from sparq_perf.measure.run import from_point_rows, point_bytes, twin_rows
from sparq_perf.measure.sweep import load_sweep


def test_measure_without_a_gpu_is_one_line_exit_2():
    p = subprocess.run([sys.executable, "-m", "sparq_perf.cli", "measure", "--quick"], capture_output=True, text=True,
                       timeout=120, cwd=tempfile.gettempdir())
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "needs" in p.stderr and "predict" in p.stderr


def test_default_sweep_covers_the_issue_grid():
    name, points = load_sweep(None)
    assert name == "default"
    assert {p.batch for p in points} == {1, 8, 64}
    assert {p.seq_len for p in points} == {4096 * 2**i for i in range(6)}
    assert {p.n_kv_heads for p in points} == {32, 8}  # MHA and GQA
    settings = {p.setting for p in points}
    assert settings == {"c=1/2", "c=1/4", "c=1/8", "r=32,k=128"}
    eighth = [p for p in points if p.setting == "c=1/8"]
    assert all(p.r == 16 and p.k == p.seq_len // 16 for p in eighth)
    assert all(p.k <= p.seq_len and p.r <= p.d_head for p in points)


@pytest.mark.parametrize("name, profile", [("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"),
                                           ("NVIDIA H200", "h200"), ("NVIDIA A100-SXM4-40GB", "a100-40gb-sxm"),
                                           ("NVIDIA A100-SXM4-80GB", "a100-80gb-sxm"), ("NVIDIA L4", "l4"),
                                           ("NVIDIA L40S", "l40s"), ("Tesla T4", None)])
def test_gpu_names_map_to_profiles(name, profile):
    assert match_profile(name) == profile


def test_point_memory_by_hand():
    _, points = load_sweep(None)
    p = next(p for p in points if p.batch == 64 and p.seq_len == 131072 and p.n_kv_heads == 32)
    # K, K^T, V in bf16 + fp32 scores: 64*32*131072*(3*128*2 + 4) bytes = 207 GB: skipped on an 80 GB GPU
    assert point_bytes(p) == 64 * 32 * 131072 * (3 * 128 * 2 + 4)


def test_measured_rows_carry_their_predicted_twin():
    _, points = load_sweep(None)
    p = next(p for p in points if p.batch == 8 and p.seq_len == 16384 and p.setting == "c=1/8" and p.n_kv_heads == 8)
    point_rows = [
        {"method": "sparq", "phase": P.SPARQ_SCORE, "r": 16, "k": 1024, "median_s": 20e-6, "p20_s": 19e-6, "p80_s": 21e-6},
        {"method": "sdpa", "phase": P.DENSE_DECODE, "r": None, "k": None, "median_s": 100e-6, "p20_s": 99e-6,
         "p80_s": 101e-6, "check_rel_err": 3e-3},
        {"method": "dense", "phase": P.APPEND, "r": None, "k": None, "median_s": 3e-6, "p20_s": 3e-6, "p80_s": 3e-6},
    ]
    rows = twin_rows(p, get_profile("h100-sxm"), from_point_rows(point_rows), {"source": "measured"}, 3.0e12)
    score = next(r for r in rows if r["phase"] == P.SPARQ_SCORE)
    # r=16 rows of K^T for B*H_kv = 64 pairs at S=16k, bf16: 64*16384*16*2 bytes, plus q
    # GQA: the r=16 rows of K^T are read twice (statistics, then group sums) for 64 pairs, plus q
    assert score["bytes_read"] == 2 * 64 * 16384 * 16 * 2 + 8 * 32 * 128 * 2
    assert score["achieved_bytes_per_s"] == pytest.approx((score["bytes_read"] + score["bytes_written"]) / 20e-6)
    assert score["rel_error"] == pytest.approx((score["predicted_time_s"] - 20e-6) / 20e-6)
    sdpa = next(r for r in rows if r["method"] == "sdpa")
    assert sdpa["bytes_read"] == 2 * 64 * 16384 * 128 * 2 + 8 * 32 * 128 * 2  # dense bytes
    assert sdpa["max_rel_error"] == 3e-3 and sdpa["time_p80_s"] == 101e-6
    append = next(r for r in rows if r["phase"] == P.APPEND)
    # twin is SparQ's append (the kernel writes both layouts): k and v rows, a 32 B sector per
    # K^T element, fp32 v_bar; for 64 (sequence, KV head) pairs
    assert append["bytes_written"] == 64 * 128 * (2 + 2 + 32 + 4)
    for r in rows:
        R.normalise(r)  # the shared schema


def test_sparq_rotates_more_queries_than_cache_sets_for_a_cold_l2():
    """SparQ reads r rows of K^T and k rows of K and V per call: it rotates queries until
    those reads cover 5x L2, within memory, and never fewer than the cache sets."""
    pytest.importorskip("torch")
    import math

    from sparq_perf.measure.point import MAX_QUERY_SETS, query_sets

    l2 = 50 * 2**20

    def sets_for(nbytes, most):
        return max(1, min(most, math.ceil(5 * l2 / nbytes)))

    big = 80 * 2**30
    # B=1, 32 KV heads, S=32k, d=128, bf16, r=16, k=2048: 16 x 32768 x 32 x 2 B = 33.5 MB of
    # K^T rows (and as many of K and V rows) per call: 5 x 52.4 MB / 33.5 MB -> 8 queries
    assert query_sets(1, 32, 32768, 128, 2, [(16, 2048)], 1, big, sets_for) == 8
    # k = 128: 2 x 128 x 128 x 32 x 2 B = 2.1 MB per call -> 125 wanted, at most MAX_QUERY_SETS
    assert query_sets(1, 32, 32768, 128, 2, [(16, 2048), (32, 128)], 1, big, sets_for) == MAX_QUERY_SETS
    # each query's buffers (3 x 4 B x 32 x 32768 = 12.6 MB) within a quarter of free memory
    assert query_sets(1, 32, 32768, 128, 2, [(32, 128)], 1, 4 * 3 * 4 * 32 * 32768 * 5, sets_for) == 5
    # never fewer than the cache sets (each cache set has its own query)
    assert query_sets(64, 32, 131072, 128, 2, [(16, 8192)], 3, big, sets_for) == 3
