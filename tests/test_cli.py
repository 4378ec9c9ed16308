"""The real CLI, in a subprocess: outputs, and every error path ending in one line, exit 2."""
import csv
import io
import json
import subprocess
import sys
import tempfile
import time

import pytest


def run(*args):
    # from a neutral folder, so the installed package (with its data files) is what runs
    return subprocess.run([sys.executable, "-m", "sparq_perf.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=tempfile.gettempdir())


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_readme_example_runs_and_is_fast():
    t0 = time.perf_counter()
    p = run("predict", "--gpu", "a100", "--seq", "128k")
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    assert "S = 131072" in p.stdout and "sparq_attend" in p.stdout and "TPOT" in p.stdout
    assert wall < 5  # generous for a loaded CI box; the benchmark in experiments/ records the real figure


def test_json_output_has_rows_and_summary():
    p = run("predict", "--gpu", "h100-sxm", "--model", "llama3-8b", "--batch", "16", "--seq", "32k",
            "--compression", "1/8", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["workload"] == {**d["workload"], "model": "llama3-8b", "seq_len": 32768, "batch": 16, "r": 16, "k": 2048}
    phases = {(r["method"], r["phase"]) for r in d["rows"]}
    for need in [("sparq", "sparq_score"), ("sparq", "sparq_select"), ("sparq", "sparq_attend"),
                 ("dense", "dense_attention"), ("sparq", "append"), ("sparq", "sparq_decode")]:
        assert need in phases
    assert d["summary"]["sparq.speedup_attention"] > 1


def test_csv_output_parses():
    p = run("predict", "--gpu", "ipu-bow", "--seq", "16k", "--r", "32", "--k", "128", "--csv")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert rows and all(r["device"] == "ipu-bow" and r["k"] == "128" and r["r"] == "32" for r in rows)


def test_k_as_fraction_of_s():
    p = run("predict", "--seq", "64k", "--k", "S/16", "--json")
    assert json.loads(p.stdout)["workload"]["k"] == 4096


def test_profiles_and_models_list():
    p = run("profiles")
    assert p.returncode == 0 and "h100-sxm" in p.stdout and "GB/s" in p.stdout
    p = run("models", "--json")
    assert {m["name"] for m in json.loads(p.stdout)} >= {"llama2-7b", "llama3-70b", "gemma-2b", "pythia-6.9b"}


@pytest.mark.parametrize("args, needles", [
    (["predict", "--gpu", "h1000"], ["unknown GPU/device 'h1000'", "h100-sxm", "a100-80gb-sxm"]),
    (["predict", "--model", "llama9"], ["unknown model 'llama9'", "llama2-7b"]),
    (["predict", "--seq", "12q"], ["--seq", "12q"]),
    (["predict", "--seq", "4k", "--k", "5000"], ["k = 5000 is larger than the sequence length S = 4096"]),
    (["predict", "--r", "129"], ["r = 129 is larger than d_head = 128"]),
    (["predict", "--r", "0"], ["r must be at least 1"]),
    (["predict", "--k", "0"], ["k must be at least 1"]),
    (["predict", "--k", "64", "--l", "65"], ["l = 65 is larger than k = 64"]),
    (["predict", "--batch", "0"], ["batch must be at least 1"]),
    (["predict", "--compression", "3"], ["--compression"]),
    (["predict", "--kv-dtype", "fp4"], ["--kv-dtype"]),
    (["predict", "--bogus"], ["--bogus"]),
])
def test_bad_input_is_one_line_exit_2(args, needles):
    assert_one_line_error(run(*args), *needles)


def test_model_that_does_not_fit_says_by_how_much_and_the_largest_batch():
    p = run("predict", "--gpu", "h100-sxm", "--model", "llama2-7b", "--seq", "4k", "--batch", "64", "--require-fit")
    # dense: 13.48 GB weights + 64 * 2.147 GB KV = 150.9 GB against 73.6 GB usable: 77.3 GB over
    assert_one_line_error(p, "does not fit", "73.6 GB usable", "77.3 GB over", "largest batch that fits: dense 27, SparQ 18")
    # without --require-fit it predicts anyway and warns on stderr
    p = run("predict", "--gpu", "h100-sxm", "--seq", "4k", "--batch", "64")
    assert p.returncode == 0 and "largest batch that fits: dense 27, SparQ 18" in p.stderr
    assert "weights alone" not in p.stderr
    # llama3-70b's bf16 weights (70.6e9 parameters, 141 GB) exceed an H100's 73.6 GB usable: no batch fits
    p = run("predict", "--gpu", "h100-sxm", "--model", "llama3-70b", "--seq", "4k", "--require-fit")
    assert_one_line_error(p, "largest batch that fits: dense 0, SparQ 0", "the bf16 weights alone, 141 GB, do not fit")


def test_bad_yaml_profile_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert_one_line_error(run("predict", "--gpu", str(bad)), str(bad), "not valid YAML")
    missing = tmp_path / "nothere.yaml"
    assert_one_line_error(run("predict", "--gpu", str(missing)), "cannot read")


def test_bad_calibration_is_one_line(tmp_path):
    cal = tmp_path / "cal.yaml"
    cal.write_text("device: x\ncopy_bandwidth_bytes_per_s: -1\nphases: {}\n")
    assert_one_line_error(run("predict", "--calibration", str(cal)), "copy_bandwidth_bytes_per_s")


def test_measure_refit_needs_no_gpu_and_fits_the_selection_serial_term(tmp_path):
    """`measure --refit` fits calibration.yaml again from a committed sweep's rows."""
    import shutil
    from pathlib import Path

    import yaml

    src = Path(__file__).resolve().parents[1] / "reports" / "h100-sxm"
    for name in ("rows.csv", "metadata.json"):
        shutil.copy(src / name, tmp_path / name)
    p = run("measure", "--refit", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "held-out lengths" in p.stdout and "sparq_select" in p.stdout
    cal = yaml.safe_load((tmp_path / "calibration.yaml").read_text())
    assert cal["compute_units"] == 132
    assert cal["phases"]["sparq_select"]["serial_s_per_item"] > 0
    assert "serial_s_per_item" not in cal["phases"]["dense_decode"]
    (tmp_path / "rows.csv").unlink()
    assert_one_line_error(run("measure", "--refit", "--out", str(tmp_path)), "--refit needs", "rows.csv")


def test_report_with_a_missing_benchmark_is_one_line(tmp_path):
    pytest.importorskip("plotly")
    p = run("report", "--benchmark", str(tmp_path / "nothere.json"), "--out", str(tmp_path / "r.html"))
    assert_one_line_error(p, "nothere.json", "cannot read the kernel benchmark")
