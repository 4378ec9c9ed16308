"""`measure` end to end on the CPU with the GPU calls replaced by a synthetic device whose
kernels take overhead + bytes / bandwidth: the files it writes, the calibration it fits,
--resume, and skipped points."""
import argparse
import json

import pytest

torch = pytest.importorskip("torch")

from sparq_perf import phases as P  # noqa: E402
from sparq_perf import rows as R  # noqa: E402
from sparq_perf.calibration import load_calibration  # noqa: E402
from sparq_perf.measure import point, run, timing  # noqa: E402

COPY_BW = 3.0e12


def fake_measure_point(batch, seq_len, n_heads, n_kv_heads, d_head, sparq_settings, l=0, dtype="bfloat16", **kw):
    """A device where every phase runs at 90% of copy bandwidth after 5 us, SDPA at 80%."""
    from sparq_perf.cost.attention import attention_costs
    from sparq_perf.workload import Workload

    out = []

    def add(method, phase, cost_bytes, r=None, k=None, frac=0.9):
        t = 5e-6 + cost_bytes / (frac * COPY_BW)
        out.append({"method": method, "phase": phase, "r": r, "k": k, "median_s": t, "p20_s": t * 0.99,
                    "p80_s": t * 1.01, "check_rel_err": 1e-3})

    for r, k in sparq_settings:
        w = Workload(batch, seq_len, n_heads, n_kv_heads, d_head, r, k, l, 2.0, 2.0)
        c = attention_costs("sparq", w)
        for ph in (P.SPARQ_SCORE, P.SPARQ_SELECT, P.SPARQ_ATTEND):
            add("sparq", ph, float(c[ph].bytes), r, k)
        add("sparq", P.SPARQ_DECODE, float(sum(c[ph].bytes for ph in P.SPARQ_PHASES)), r, k)
    dense = attention_costs("dense", Workload(batch, seq_len, n_heads, n_kv_heads, d_head, 1, 1, 0, 2.0, 2.0))
    add("dense", P.DENSE_DECODE, float(dense[P.DENSE_ATTENTION].bytes))
    add("sdpa", P.DENSE_DECODE, float(dense[P.DENSE_ATTENTION].bytes), frac=0.8)
    return out


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (60e9, 80e9))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(timing, "copy_bandwidth_bytes_per_s", lambda: {"bytes_per_s": COPY_BW})
    monkeypatch.setattr(timing, "matmul_flops_per_s", lambda: {"flops_per_s": 790e12})
    monkeypatch.setattr(point, "measure_point", fake_measure_point)


def args(out, **kw):
    return argparse.Namespace(sweep=None, out=str(out), resume=False, quick=False, commit="abc123", **kw)


def test_measure_writes_rows_metadata_and_a_calibration_that_recovers_the_device(tmp_path, fake_gpu):
    assert run.main(args(tmp_path)) == 0
    rows = R.read_csv(tmp_path / "rows.csv")
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert meta["commit"] == "abc123" and meta["profile"] == "h100-sxm" and meta["copy_bandwidth_bytes_per_s"] == COPY_BW
    ok = [r for r in rows if r["status"] == "ok"]
    skipped = [r for r in rows if r["status"].startswith("skipped")]
    # B=64 at S=128k MHA needs 206 GB: skipped by the memory check, and recorded
    assert any(r["batch"] == 64 and r["seq_len"] == 131072 and r["n_kv_heads"] == 32 for r in skipped)
    assert all(r["predicted_time_s"] and r["git_commit"] == "abc123" for r in ok)
    cal = load_calibration(tmp_path / "calibration.yaml")
    assert cal.compute_units == meta["compute_units"]  # what `measure --refit` reads back
    assert meta["compute_units"] == 132  # the stand-in GPU cannot tell: the h100-sxm profile's SMs
    fit = cal.phases[P.SPARQ_SCORE]
    assert fit.bandwidth_fraction == pytest.approx(0.9, rel=1e-3) and fit.overhead_s == pytest.approx(5e-6, rel=1e-2)
    held = cal.info["held_out"]
    assert held["test_seq_len"] == [32768, 65536, 131072]
    assert held["errors"]["all"]["p90_abs_rel_error"] < 1e-3  # an exact synthetic device is predicted exactly


def test_resume_runs_only_what_is_missing(tmp_path, fake_gpu, monkeypatch):
    run.main(args(tmp_path, ))
    first = R.read_csv(tmp_path / "rows.csv")
    keep = [r for r in first if r["seq_len"] != 4096]
    R.write_csv(tmp_path / "rows.csv", keep)
    calls = []
    monkeypatch.setattr(point, "measure_point", lambda *a, **k: calls.append(a) or fake_measure_point(*a, **k))
    run.main(argparse.Namespace(sweep=None, out=str(tmp_path), resume=True, quick=False, commit="abc123"))
    assert {a[1] for a in calls} == {4096}
    assert len(R.read_csv(tmp_path / "rows.csv")) == len(first)
