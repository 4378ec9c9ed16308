"""The report: rows -> figures (no browser), the size of the default grid, and the
page itself in headless Chromium (console clean, every figure drawn, controls change figures)."""
import argparse
import json
import math
import re
import shutil
import tempfile

import numpy as np
import pytest

pytest.importorskip("plotly")
import plotly.graph_objects as go  # noqa: E402

from sparq_perf import rows as R  # noqa: E402
from sparq_perf.compare import compare_rows  # noqa: E402
from sparq_perf.errors import UserError  # noqa: E402
from sparq_perf.hardware import builtin_profiles  # noqa: E402
from sparq_perf.models import builtin_models  # noqa: E402
from sparq_perf.predict import Settings, predict  # noqa: E402
from sparq_perf.report import build as B  # noqa: E402
from sparq_perf.report import figures as F  # noqa: E402
from sparq_perf.report import page  # noqa: E402
from sparq_perf.report.grid import RIVAL_METHODS, SETTINGS, grid_rows, rival_rows  # noqa: E402

SMALL = dict(models=("llama2-7b", "llama3-8b"), devices=("h100-sxm", "a100-40gb-sxm"), batches=(1, 8),
             seq_lens=(1024, 4096, 16384))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def small_rows():
    return grid_rows(**SMALL)


def measured_like(pred, factor_by_phase):
    """Measured rows made from predicted ones: measured time = predicted time x factor."""
    out = []
    for r in pred.to_dict("records"):
        if r["phase"] in factor_by_phase and r["batch"] == 8 and r["device"] == "h100-sxm":
            out.append({**{c: (None if isinstance(v, float) and math.isnan(v) else v) for c, v in r.items()},
                        "source": "measured", "predicted_time_s": r["time_s"],
                        "time_s": r["time_s"] * factor_by_phase[r["phase"]], "count": 1.0, "scope": "layer",
                        "achieved_bytes_per_s": (r["bytes_read"] + r["bytes_written"]) / (r["time_s"] * factor_by_phase[r["phase"]])})
            if r["method"] == "dense":  # as `measure` writes them: dense has no r and k
                out[-1].update(r=None, k=None)
    return out


FACTORS = {"dense_decode": 1.1, "sparq_decode": 1.5, "sparq_score": 0.8, "sparq_select": 2.0, "sparq_attend": 1.25}


# ---------------------------------------------------------------------------------------
# Rows

def test_grid_rows_are_predict_rows():
    """The column-wise grid gives each point exactly the rows `predict` gives it."""
    df = grid_rows(models=("llama3-8b",), devices=("l4",), batches=(8,), seq_lens=(16384,))
    p = predict(Settings(builtin_models()["llama3-8b"], builtin_profiles()["l4"], batch=8, seq_len=16384,
                         compression=1 / 4))
    got = {(r["method"], r["phase"]): r for r in df[(df.r == p.r) & (df.k == p.k)].to_dict("records")}
    assert len(got) == len(p.rows) == 24
    for want in p.rows:
        row = got[(want["method"], want["phase"])]
        for c, v in R.normalise(want).items():
            if v is None:
                assert row[c] is None or (isinstance(row[c], float) and math.isnan(row[c])), c
            elif isinstance(v, float):
                assert row[c] == pytest.approx(v, rel=1e-12), (want["phase"], c)
            else:
                assert row[c] == v, (want["phase"], c)


def test_settings_label_rows_and_shared_points_appear_under_both(small_rows):
    df = B.with_settings(B.frame(small_rows))
    # S=1k: compression 1/4 (r=32, k=S/8=128) is the same point as r=32, k=128
    at_1k = df[(df.seq_len == 1024) & (df.r == 32) & (df.k == 128) & (df.model == "llama2-7b")]
    assert set(at_1k.setting) == {"1/4", "r=32, k=128"}
    assert set(df.setting) == {"1/2", "1/4", "1/8", "r=32, k=128"}


# ---------------------------------------------------------------------------------------
# Figures from rows

@pytest.fixture(scope="module")
def small_views(small_rows):
    return {v.id: v for v in B.views(B.frame(small_rows), B.frame(measured_like(small_rows, FACTORS)), [BENCH])}


def test_every_view_has_a_valid_figure_for_every_selection(small_views):
    n = {"fig-speedup": 2 * 2 * 2, "fig-roofline": 2 * 2 * 2 * 4, "fig-phases": 2 * 2 * 2 * 4,
         "fig-accuracy": 1, "fig-memory": 2 * 2 * 2, "fig-heatmap": 2 * 2 * 4,
         "fig-rivals": 2 * 2 * 2 * 3,  # rivals: the three settings that are a target compression
         "fig-kernels": 1}
    for vid, view in small_views.items():
        assert len(view.states) == n[vid], vid
        for key, fig in view.states.items():
            go.Figure(fig)  # plotly validates every property name and value
            assert fig["data"] and all(len(t.get("x") or t.get("z") or []) for t in fig["data"]), (vid, key)
            json.dumps(fig)


def test_speedup_figure_shows_the_predicted_speedups(small_views):
    fig = small_views["fig-speedup"].states["llama3-8b|a100-40gb-sxm|8"]
    assert "llama3-8b on a100-40gb-sxm, batch 8" in fig["layout"]["title"]["text"]
    step = next(t for t in fig["data"] if t["name"] == "compression 1/8" and t["xaxis"] == "x2")
    attn = next(t for t in fig["data"] if t["name"] == "compression 1/8" and t["xaxis"] == "x")
    for i, S in enumerate(step["x"]):
        p = predict(Settings(builtin_models()["llama3-8b"], builtin_profiles()["a100-40gb-sxm"], batch=8, seq_len=S,
                             compression=1 / 8))
        assert step["y"][i] == pytest.approx(p.summary["sparq.speedup_step"], rel=1e-4)
        assert attn["y"][i] == pytest.approx(p.summary["sparq.speedup_attention"], rel=1e-4)
    # measured crosses only where measured rows are (h100-sxm, batch 8)
    assert not any(t["name"].startswith("measured") for t in fig["data"])
    fig = small_views["fig-speedup"].states["llama2-7b|h100-sxm|8"]
    cross = next(t for t in fig["data"] if t["name"] == "measured, 1/8")
    attn = next(t for t in fig["data"] if t["name"] == "compression 1/8" and t["xaxis"] == "x")
    # measured dense attention took 1.1x its prediction, SparQ 1.5x
    assert cross["y"] == pytest.approx([attn["y"][attn["x"].index(S)] * 1.1 / 1.5 for S in cross["x"]], rel=1e-4)
    assert cross["x"] == [1024, 4096, 16384]


def test_roofline_has_ceilings_and_phases_at_their_intensity(small_views, small_rows):
    fig = small_views["fig-roofline"].states["llama2-7b|h100-sxm|1|1/8"]
    names = [t["name"] for t in fig["data"]]
    assert names[:2] == ["ceiling, achievable", "ceiling, datasheet peak"]
    hw = builtin_profiles()["h100-sxm"]
    ceiling = fig["data"][0]
    assert max(ceiling["y"]) == pytest.approx(hw.flops_per_s("bf16"), rel=1e-4)
    for t in fig["data"][2:]:
        assert all(y <= max(ceiling["y"]) * 1.0001 for y in t["y"]), t["name"]
    score = next(t for t in fig["data"] if t["name"] == "SparQ sparq_score")
    rows = small_rows[(small_rows.model == "llama2-7b") & (small_rows.device == "h100-sxm") & (small_rows.batch == 1)
                      & (small_rows.phase == "sparq_score") & (small_rows.r == 16)].sort_values("seq_len")
    assert score["x"] == pytest.approx(rows.intensity_flop_per_byte.tolist(), rel=1e-4)
    # measured points beside the predicted ones
    assert any(n.startswith("measured") for n in
               (t["name"] for t in small_views["fig-roofline"].states["llama2-7b|h100-sxm|8|1/8"]["data"]))


def test_phase_bars_stack_to_the_step_time(small_views, small_rows):
    fig = small_views["fig-phases"].states["llama3-8b|h100-sxm|8|1/4"]
    step_bars = [t for t in fig["data"] if t["yaxis"] == "y2"]
    total = np.nansum([[np.nan if v is None else v for v in t["y"]] for t in step_bars], axis=0)
    want = small_rows[(small_rows.model == "llama3-8b") & (small_rows.device == "h100-sxm") & (small_rows.batch == 8)
                      & (small_rows.phase == "decode_step") & (small_rows.r == 32)
                      & (small_rows.k == small_rows.seq_len // 8)].sort_values(["seq_len", "method"])
    assert total == pytest.approx((want.time_s / F.MS).tolist(), rel=1e-4)


def test_memory_and_heatmap(small_views):
    mem = small_views["fig-memory"].states["llama2-7b|h100-sxm|8"]
    dense, sparq = (next(t for t in mem["data"] if t["name"].startswith(n) and t.get("xaxis") != "x2")
                    for n in ("dense", "SparQ"))
    assert all(s / d == pytest.approx(1.5, rel=1e-3) for d, s in zip(dense["y"], sparq["y"]))  # K twice
    heat = small_views["fig-heatmap"].states["llama2-7b|h100-sxm|1/8"]
    assert heat["data"][0]["y"] == ["B=1", "B=8"] and len(heat["data"][0]["x"]) == 3


def test_rival_rows_are_compare_rows():
    """One vectorized evaluate per (model, device) gives what compare_rows gives per batch and compression."""
    got = rival_rows(models=SMALL["models"], devices=SMALL["devices"], batches=SMALL["batches"],
                     seq_lens=SMALL["seq_lens"])
    assert set(got.setting) == {"1/2", "1/4", "1/8"} and set(got.method) == {"dense", *RIVAL_METHODS}
    got = got.set_index(["model", "device", "batch", "setting", "method", "seq_len"])
    n = 0
    for model in SMALL["models"]:
        for device in SMALL["devices"]:
            for batch in SMALL["batches"]:
                for s in SETTINGS[:3]:
                    for want in compare_rows(builtin_models()[model], builtin_profiles()[device],
                                             seq_len=SMALL["seq_lens"], batch=batch, compression=s.compression,
                                             methods=RIVAL_METHODS):
                        row = got.loc[(model, device, batch, s.label, want["method"], want["seq_len"])]
                        for c in ("label", "params", "note", "speedup_step", "speedup_attention",
                                  "kv_bytes_per_sequence", "max_batch", "fits", "reachable", "evicts"):
                            assert row[c] == want[c], (model, device, batch, s.label, want["method"], c)
                        n += 1
    assert n == 2 * 2 * 2 * 3 * (1 + len(RIVAL_METHODS)) * 3  # dense too


def test_rivals_figure_shows_compare_rows_and_dashes_eviction(small_views):
    fig = small_views["fig-rivals"].states["llama3-8b|a100-40gb-sxm|8|1/4"]
    title = fig["layout"]["title"]["text"]
    assert title == "SparQ among its rivals: llama3-8b on a100-40gb-sxm, batch 8, compression 1/4"
    want = compare_rows(builtin_models()["llama3-8b"], builtin_profiles()["a100-40gb-sxm"], seq_len=SMALL["seq_lens"],
                        batch=8, compression=1 / 4, methods=RIVAL_METHODS)
    left = {t["name"]: t for t in fig["data"] if t.get("xaxis", "x") == "x"}
    right = {t["name"]: t for t in fig["data"] if t.get("xaxis") == "x2" and t["name"] in left}
    assert list(left) == ["dense", "SparQ", "SparQ 1xK", "Quest", "Double Sparsity", "Loki", "H2O", "StreamingLLM",
                          "FlexGen top-k"]
    for row in want:
        i = left[row["label"]]["x"].index(row["seq_len"])
        assert left[row["label"]]["y"][i] == pytest.approx(row["speedup_step"], rel=1e-4)
        assert left[row["label"]]["text"][i] == row["params"]
        assert right[row["label"]]["y"][i] == pytest.approx(row["kv_bytes_per_sequence"] / 2**30, rel=1e-4)
        assert right[row["label"]]["customdata"][i] == row["max_batch"]
    sparq_16k = next(r for r in want if r["method"] == "sparq" and r["seq_len"] == 16384)
    assert left["SparQ"]["y"][left["SparQ"]["x"].index(16384)] == pytest.approx(sparq_16k["speedup_step"], rel=1e-4)
    # eviction methods dashed, with the warning in the hover; the others solid, or dotted where unreachable
    for name, t in [*left.items(), *right.items()]:
        evicts = name in ("H2O", "StreamingLLM")
        assert (t["line"]["dash"] == "dash") == evicts, name
        assert ("evicted tokens cannot be recovered" in t["hovertemplate"]) == evicts, name
    assert left["FlexGen top-k"]["line"]["dash"] == "dot" and left["SparQ"]["line"]["dash"] == "solid"
    # the room line: (usable memory - weights) / batch, in GiB
    hw, m = builtin_profiles()["a100-40gb-sxm"], builtin_models()["llama3-8b"]
    room = next(t for t in fig["data"] if t["name"].startswith("room for KV"))
    assert room["y"][0] == pytest.approx((hw.usable_bytes - m.n_params * 2) / 8 / 2**30, rel=1e-4)
    # open markers exactly where the batch does not fit
    h2o_fits = [r["fits"] for r in want if r["method"] == "h2o"]
    symbol = left["H2O"]["marker"]["symbol"]
    assert (symbol == "circle") if all(h2o_fits) else symbol == [0 if f else 100 for f in h2o_fits]


def test_pack_round_trips_every_selection(small_views):
    """What the page's script rebuilds from templates and patches is each figure (None: key removed)."""
    for view in small_views.values():
        packed = page.pack(view)
        # one template per model and setting for the rivals, one for the others
        assert len(packed["templates"]) == (2 * 3 if view.id == "fig-rivals" else min(1, len(view.states)))
        for key, fig in view.states.items():
            s = packed["states"][key]
            template = packed["templates"][s.get("template", 0)]
            data = [t if "tpl" not in t else {k: v for k, v in {**template["data"][t["tpl"]], **t}.items()
                                              if k != "tpl" and v is not None} for t in s["data"]]
            layout = {k: v for k, v in {**template["layout"], **s["layout"]}.items() if v is not None}
            assert data == fig["data"] and layout == fig["layout"], (view.id, key)


def test_accuracy_figure_writes_median_and_p90(small_rows):
    measured = B.frame(measured_like(small_rows, FACTORS))
    stats = F.error_stats(measured).set_index("phase")
    assert stats.loc["sparq_select", "median"] == pytest.approx(0.5)  # predicted = measured / 2
    assert stats.loc["sparq_score", "p90"] == pytest.approx(0.25)
    fig = F.accuracy_figure(measured)
    text = fig["layout"]["annotations"][0]["text"]
    assert "sparq sparq_select: 50.0%, 50.0%" in text and "dense dense_decode: 9.1%, 9.1%" in text
    low, high, exact = fig["data"][:3]
    assert high["name"] == "prediction within ±20%" and exact["name"] == "y = x (perfect prediction)"
    # |predicted - measured| <= 20% of measured  <=>  measured in [predicted / 1.2, predicted / 0.8]
    assert low["y"] == pytest.approx([x / 1.2 for x in low["x"]]) and high["y"] == pytest.approx([x / 0.8 for x in high["x"]])


def test_no_measurements_gives_a_note_with_how_to_measure(small_rows, tmp_path):
    out = B.build_report(small_rows, [], tmp_path / "r.html")
    page = out.read_text()
    assert 'id="fig-accuracy-note"' in page and "sparq-perf measure" in page
    assert 'id="fig-accuracy"' not in page


def _bench_row(B_, S, Hkv, sdpa_us, dense_us, step_us, ideal):
    t = f"r16k{S // 16}"
    return {"B": B_, "S": S, "Hkv": Hkv, "sdpa_us": sdpa_us, "dense_us": dense_us, "dense_vs_sdpa": sdpa_us / dense_us,
            "dense_vs_copy": 0.9, f"{t}_us": step_us, f"{t}_speedup": min(sdpa_us, dense_us) / step_us,
            f"{t}_ideal": ideal, f"{t}_frac_ideal": min(sdpa_us, dense_us) / step_us / ideal, f"{t}_score_us": 1.0,
            f"{t}_select_us": 2.0, f"{t}_attend_us": 3.0}


BENCH = {"device": "Test GPU", "commit": "abc123", "date": "2026-12-02", "path": "kernels.json",
         "summary": [_bench_row(1, 32768, 32, 128.0, 125.0, 50.0, 8.0), _bench_row(16, 32768, 8, 480.0, 500.0, 160.0, 7.9)]}


def test_kernel_benchmark_figure_shows_the_summary():
    """Left: our dense over SDPA at each shape (128/125 = 1.024, 480/500 = 0.96); right: SparQ's
    step over the faster dense (125/50 = 2.5x, 480/160 = 3x) beside its ideal (8, 7.9)."""
    fig = F.kernel_benchmark_figure([BENCH])
    go.Figure(fig)  # a valid Plotly figure
    dense, sparq, ideal = fig["data"]
    assert dense["x"] == ["B=1 S=32k MHA", "B=16 S=32k GQA 8 KV"] == sparq["x"]
    assert dense["y"] == [1.024, 0.96] and sparq["y"] == [2.5, 3.0] and ideal["y"] == [8.0, 7.9]
    assert dense["customdata"][0][:2] == [128.0, 125.0] and sparq["customdata"][1][0] == 160.0
    assert any(sh["y0"] == F.DENSE_TARGET for sh in fig["layout"]["shapes"])


def test_benchmarks_are_read_from_bench_kernels_output(small_rows, tmp_path):
    good = tmp_path / "kernels.json"
    good.write_text(json.dumps({"provenance": {"device": "Test GPU", "git_commit": "abc123", "date": "today"},
                                "summary": BENCH["summary"]}))
    (bench,) = B.load_benchmarks([good])
    assert bench["device"] == "Test GPU" and bench["summary"] == BENCH["summary"]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(UserError, match="not a kernel benchmark"):
        B.load_benchmarks([bad])
    with pytest.raises(UserError, match="cannot read the kernel benchmark"):
        B.load_benchmarks([tmp_path / "missing.json"])
    page = B.build_report(small_rows, [], tmp_path / "r.html", benchmarks=[bench]).read_text()
    assert 'id="fig-kernels"' in page and "Kernel benchmark: " in page and "Test GPU" in page
    page = B.build_report(small_rows, [], tmp_path / "r2.html").read_text()
    assert 'id="fig-kernels-note"' in page and "bench_kernels.py" in page


# ---------------------------------------------------------------------------------------
# The file: offline, one plotly.js, built from the default grid in time

def test_page_is_offline_with_plotly_inline_once(small_rows, tmp_path):
    page = B.build_report(small_rows, [], tmp_path / "r.html").read_text()
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert page.count("<script>") == 2 and page.count('<script type="application/json"') == 1
    import plotly.offline
    js = plotly.offline.get_plotlyjs()
    assert page.count(js[:200]) == 1


def test_default_report_is_small(tmp_path):
    # (its build time is in the benchmark experiments/bench_predict.py, not in a timed test)
    out = B.build_report(grid_rows(), [], tmp_path / "index.html")
    size = out.stat().st_size
    assert size < 15e6, f"default report is {size / 1e6:.1f} MB"


def test_main_reads_measurement_folders_and_rejects_bad_ones(small_rows, tmp_path, monkeypatch):
    folder = tmp_path / "h100-sxm"
    folder.mkdir()
    R.write_csv(folder / "rows.csv", measured_like(small_rows, FACTORS))
    (folder / "metadata.json").write_text(json.dumps({"gpu": "NVIDIA H100 80GB HBM3", "commit": "abc123"}))
    rows, sources = B.load_measurements([folder])
    assert len(rows) > 0 and sources[0]["gpu"] == "NVIDIA H100 80GB HBM3"
    with pytest.raises(UserError, match="no rows.csv"):
        B.load_measurements([tmp_path / "nowhere"])
    monkeypatch.setattr(B, "grid_rows", lambda: small_rows)
    out = tmp_path / "out" / "index.html"
    assert B.main(argparse.Namespace(measurements=[str(folder)], out=str(out))) == 0
    page = out.read_text()
    assert 'id="fig-accuracy"' in page and "NVIDIA H100 80GB HBM3" in page


# ---------------------------------------------------------------------------------------
# In a real browser

def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip(f"needs Debian's chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER}): "
                    "apt-get install chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              f"--user-data-dir={tempfile.mkdtemp(prefix='sparq-chrome-')}", "--window-size=1400,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


GPU_NOISE = re.compile(r"webgl|gpu|swiftshader|gl_|opengl|angle", re.I)


def _figure_state(driver, fig_id):
    return driver.execute_script(
        "var d = document.getElementById(arguments[0]);"
        "return JSON.stringify({data: d.data.map(function (t) { return [t.name, t.x, t.y, t.z]; }),"
        " title: d.layout.title.text});", fig_id)


def test_report_in_headless_chromium(small_rows, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out = B.build_report(small_rows, measured_like(small_rows, FACTORS), tmp_path / "report.html",
                         benchmarks=[BENCH])
    driver = _chrome()
    try:
        driver.get(out.resolve().as_uri())
        plots = driver.find_elements(By.CSS_SELECTOR, "div.plot")
        assert [p.get_attribute("id") for p in plots] == ["fig-speedup", "fig-roofline", "fig-phases", "fig-accuracy",
                                                         "fig-memory", "fig-heatmap", "fig-rivals", "fig-kernels"]
        WebDriverWait(driver, 20).until(lambda d: d.execute_script(
            "return Array.from(document.querySelectorAll('div.plot')).every(function (p) {"
            " return p.querySelector('.main-svg') && p.data && p.data.length > 0; })"))
        n_points = driver.execute_script(
            "return Array.from(document.querySelectorAll('div.plot')).map(function (p) {"
            " return p.querySelectorAll('.scatterlayer .point, .barlayer .point, .hm, image').length; })")
        assert all(n > 0 for n in n_points), n_points  # something drawn in every figure

        speed0, roof0 = _figure_state(driver, "fig-speedup"), _figure_state(driver, "fig-roofline")
        Select(driver.find_element(By.ID, "control-model")).select_by_value("llama3-8b")
        WebDriverWait(driver, 10).until(lambda d: _figure_state(d, "fig-speedup") != speed0)
        speed1 = json.loads(_figure_state(driver, "fig-speedup"))
        assert "llama3-8b on h100-sxm, batch 1" in speed1["title"]
        assert "llama3-8b" in json.loads(_figure_state(driver, "fig-roofline"))["title"]

        # the controls compose: device then setting keep the model just chosen
        Select(driver.find_element(By.ID, "control-device")).select_by_value("a100-40gb-sxm")
        roof1 = _figure_state(driver, "fig-roofline")
        Select(driver.find_element(By.ID, "control-setting")).select_by_value("r=32, k=128")
        WebDriverWait(driver, 10).until(lambda d: _figure_state(d, "fig-roofline") != roof1)
        roof2 = json.loads(_figure_state(driver, "fig-roofline"))
        assert roof2["title"] == "Roofline: llama3-8b on a100-40gb-sxm, batch 1, compression r=32, k=128"
        # the rivals need a target compression: a fixed (r, k) says so instead of a figure
        rivals_missing = driver.find_element(By.ID, "fig-rivals-missing")
        assert rivals_missing.is_displayed() and "target compression" in rivals_missing.text
        Select(driver.find_element(By.ID, "control-setting")).select_by_value("1/4")
        WebDriverWait(driver, 10).until(lambda d: not d.find_element(By.ID, "fig-rivals-missing").is_displayed())
        rivals = json.loads(_figure_state(driver, "fig-rivals"))
        assert rivals["title"] == "SparQ among its rivals: llama3-8b on a100-40gb-sxm, batch 1, compression 1/4"
        assert _figure_state(driver, "fig-roofline") != roof0
        assert "a100-40gb-sxm" in json.loads(_figure_state(driver, "fig-speedup"))["title"]  # speedup followed too
        assert "#model=llama3-8b" in driver.current_url and "device=a100-40gb-sxm" in driver.current_url

        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; })")
        assert not [r for r in resources if not r.startswith("file:")], resources

        errors = [e for e in driver.get_log("browser")
                  if e["level"] in ("SEVERE", "WARNING") and not GPU_NOISE.search(e["message"])]
        assert not errors, errors
        driver.set_window_size(1400, 3000)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    finally:
        driver.quit()


def test_numbers_for_the_page_keep_whole_numbers_exact():
    from sparq_perf.report.figures import _list

    assert _list([131072, 0.123456789, 2.5e-7]) == [131072, 0.12346, 2.5e-7]
    assert _list([[65536, 1.0 / 3]]) == [[65536, 0.33333]]
