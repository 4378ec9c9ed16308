"""`sparq-perf report`: rows (predicted and measured) -> figures -> one self-contained HTML file.

`build_report(pred_rows, measured_rows, out_path)` is the whole report as a function of
rows; `main(args)` adds the default prediction grid and the measured rows found on disk.
"""
from __future__ import annotations

import datetime as _dt
import glob
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import rows as R
from ..cost.attention import SparqImpl
from ..cost.rivals import DEFAULT_IMPLS
from ..errors import UserError
from ..hardware import builtin_profiles
from ..models import builtin_models
from . import figures as F
from .grid import SETTINGS, grid_rows, rival_rows
from .page import View, render_page

DEFAULT_MEASUREMENTS = "reports/*/rows.csv"
DEFAULT_BENCHMARKS = ("reports/kernels/kernels.json", "reports/kernels/*/kernels.json")  # experiments/bench_kernels.py
INITIAL = {"model": "llama2-7b", "device": "h100-sxm", "batch": "1", "setting": "1/8"}


def main(args) -> int:
    folders = args.measurements or sorted(str(Path(p).parent) for p in glob.glob(DEFAULT_MEASUREMENTS))
    measured, sources = load_measurements(folders)
    benchmarks = load_benchmarks(getattr(args, "benchmarks", None)
                                 or sorted(p for pattern in DEFAULT_BENCHMARKS for p in glob.glob(pattern)))
    t0 = time.perf_counter()
    out = build_report(grid_rows(), measured, args.out, sources=sources, benchmarks=benchmarks)
    took = time.perf_counter() - t0
    n_measured = sum(1 for r in measured if r.get("source") == "measured")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {took:.1f} s, with {n_measured} measured rows "
          f"from {len(sources)} folder(s)")
    return 0


def load_measurements(folders) -> tuple[list[dict], list[dict]]:
    """Rows of each folder's rows.csv, and a description of each folder (its metadata.json)."""
    rows, sources = [], []
    for folder in folders:
        path = Path(folder) / "rows.csv"
        if not path.is_file():
            raise UserError(f"--measurements {folder}: no rows.csv there (write one with `sparq-perf measure --out {folder}`)")
        try:
            found = R.read_csv(path)
        except (ValueError, KeyError) as e:
            raise UserError(f"{path}: cannot read rows: {e}") from None
        meta_path = Path(folder) / "metadata.json"
        meta = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise UserError(f"{meta_path}: not JSON ({e.msg}, line {e.lineno})") from None
        rows += found
        sources.append({"folder": str(folder), "rows": len(found), **{k: meta.get(k) for k in
                                                                       ("gpu", "profile", "date", "commit", "command")}})
    return rows, sources


def load_benchmarks(paths) -> list[dict]:
    """Each kernel benchmark (kernels.json of experiments/bench_kernels.py) as {device, commit,
    date, path, summary}: its summary rows, one per shape."""
    out = []
    for path in paths:
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise UserError(f"{path}: cannot read the kernel benchmark ({e.strerror})") from None
        try:
            data = json.loads(text)
            prov = data["provenance"]
            out.append({"device": prov["device"], "commit": prov.get("git_commit"), "date": prov.get("date"),
                        "path": str(path), "summary": data["summary"]})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a kernel benchmark (kernels.json of experiments/bench_kernels.py): {e!r}") from None
    return out


def frame(rows) -> pd.DataFrame:
    """Rows (a list of dicts or a DataFrame with the row columns) as a DataFrame of every column."""
    if isinstance(rows, pd.DataFrame):
        missing = set(R.COLUMNS) - set(rows.columns)
        df = rows.assign(**{c: np.nan for c in missing})
    else:
        df = pd.DataFrame([R.normalise(r) for r in rows], columns=list(R.COLUMNS))
    for c in R.FLOAT_COLUMNS | R.INT_COLUMNS:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def with_settings(df: pd.DataFrame, settings=SETTINGS) -> pd.DataFrame:
    """Rows labelled with each SparQ setting whose (r, k) they match at their (d_h, S); a row two
    settings share appears under both, a row without r and k (dense, as measured) under every
    setting, a row that matches none is dropped."""
    parts = []
    d_head = df["d_head"].fillna(0).to_numpy(np.int64)
    seq = df["seq_len"].fillna(0).to_numpy(np.int64)
    unset = df["r"].isna().to_numpy() & df["k"].isna().to_numpy()
    for s in settings:
        r, k = s.rk(d_head, seq)
        sel = ((df["r"].to_numpy() == r) & (df["k"].to_numpy() == k)) | unset
        parts.append(df[sel].assign(setting=s.label))
    return pd.concat(parts, ignore_index=True)


def views(pred: pd.DataFrame, measured: pd.DataFrame, benchmarks=()) -> list[View]:
    """Every figure of the report, for every selection of the controls it uses."""
    profiles, models = builtin_profiles(), builtin_models()
    p_set, m_set = with_settings(pred), with_settings(measured)
    out = []

    dims, inner = ("model", "device", "batch"), ("setting", "method", "phase")
    measured_by = F.split(m_set, dims, inner)
    out.append(View("fig-speedup", "1. Speedup of SparQ over dense against sequence length",
                    "Dense time divided by SparQ time for the same work: left, the attention of one layer "
                    "(append excluded); right, the whole decode step (TPOT), where the weights read by every step "
                    "dilute the gain. One line per SparQ setting; above the dotted line at 1 SparQ is faster. "
                    "Crosses: measured attention speedups, where measurements exist.",
                    dims, {k: F.speedup_figure(r, measured_by.get(k)) for k, r in F.split(p_set, dims, inner).items()}))

    dims, inner = ("model", "device", "batch", "setting"), ("method", "phase")
    measured_by, by_setting = F.split(m_set, dims, inner), F.split(p_set, dims, inner)
    out.append(View("fig-roofline", "2. Roofline: where each phase sits",
                    "Each phase of dense and SparQ decode placed by its arithmetic intensity (x) and the FLOP/s it "
                    "attains in the prediction (y), one point per sequence length of the grid (hover for S). "
                    "Circles: dense; diamonds: SparQ; the weight matmuls are the same for both. Points under the "
                    "sloped ceiling are bandwidth-bound; far below it, fixed costs (launches, top-k) dominate. "
                    "Crosses: measured phases at the same point. <code>append</code> does no arithmetic and has no "
                    "place on a log axis.", dims,
                    {k: F.roofline_figure(r, profiles.get(r.labels["device"]), measured_by.get(k))
                     for k, r in by_setting.items()}))

    out.append(View("fig-phases", "3. Time per phase, dense vs SparQ",
                    "Stacked predicted time of each operation, dense and SparQ side by side at each sequence length. "
                    "Top: the attention of one layer. Bottom: the whole decode step, each operation times the number "
                    "of times it runs (once per layer, or once per step for the LM head). Click a legend entry to "
                    "hide it.", dims, {k: F.phase_time_figure(r) for k, r in by_setting.items()}))

    usable = measured[(measured["time_s"] > 0) & measured["predicted_time_s"].notna()]
    out.append(View("fig-accuracy", "4. Predicted vs measured",
                    "Each measured phase at its predicted time (x) and measured median time (y), log scales. On "
                    "the dashed line the prediction is exact; in the shaded band it is within ±20%. The box gives "
                    "the median and 90th percentile of |error| per phase.", (),
                    {"": F.accuracy_figure(usable)} if len(usable) else {},
                    note="No measurements were found (no <code>reports/*/rows.csv</code> with measured rows). On a "
                         "machine with a CUDA GPU, run <code>sparq-perf measure --out reports/&lt;device&gt;</code>, "
                         "then <code>sparq-perf report</code> again to see predictions checked against them."))

    dims, inner = ("model", "device", "batch"), ("method", "phase")
    out.append(View("fig-memory", "5. Memory: KV cache and the largest batch that fits",
                    "Left: KV cache of the whole batch against sequence length; SparQ keeps K twice (K and its "
                    "transpose K<sup>T</sup>, 1.5× dense) plus a running mean of V. The dotted line is the room the "
                    "device leaves for KV after the weights. Right: the largest batch whose weights and KV fit "
                    "(no point where not even one sequence fits).",
                    dims, {k: F.memory_figure(r, models[r.labels["model"]], profiles[r.labels["device"]])
                           for k, r in F.split(pred, dims, inner).items()
                           if r.labels["model"] in models and r.labels["device"] in profiles}))

    dims, inner = ("model", "device", "setting"), ("method", "phase", "batch")
    out.append(View("fig-heatmap", "6. Speedup over batch and sequence length",
                    "Predicted speedup of SparQ over dense for each batch and sequence length: attention of one "
                    "layer (left) and the whole decode step (right). Blue: SparQ faster; red: slower.",
                    dims, {k: F.heatmap_figure(r) for k, r in F.split(p_set, dims, inner).items()}))

    dims, inner = ("model", "device", "batch", "setting"), ("method",)
    rivals = rival_rows(models=[m for m in _ordered(pred["model"]) if m in models],
                        devices=[d for d in _ordered(pred["device"]) if d in profiles],
                        batches=sorted(int(b) for b in pred["batch"].unique()),
                        seq_lens=sorted(int(s) for s in pred["seq_len"].unique()),
                        weight_dtype=str(pred["weight_dtype"].iloc[0]), kv_dtype=str(pred["kv_dtype"].iloc[0]))
    out.append(View("fig-rivals", "7. SparQ among its rivals",
                    "Each method at its own settings for the selected target compression (SparQ setting 1/2, 1/4 "
                    "or 1/8; hover for the settings and caveats). Left: the whole decode step's speedup over dense "
                    "(thin black line at 1) at the selected batch; open markers: that batch's weights and KV do not "
                    "fit in the device's memory. Right: KV cache of one sequence, all layers; dotted red line: the "
                    "memory left for KV after the weights, divided by the batch (points above it do not fit). "
                    "<b>Dashed: eviction methods (H2O, StreamingLLM)</b>: evicted tokens cannot be recovered by "
                    "later queries, a cost in accuracy no curve here shows (accuracy is not modelled for any method). "
                    "Dotted: the method cannot reach the target (FlexGen's exact scores read all of K). "
                    "Attention-only speedups: <code>sparq-perf compare</code>.",
                    dims, {k: F.rivals_figure(r) for k, r in F.split(rivals, dims, inner).items()},
                    template_dims=("model", "setting"),
                    missing="The rivals are compared at a target compression: pick SparQ setting 1/2, 1/4 or 1/8 "
                            "(a fixed r and k has no counterpart for the other methods)."))

    out.append(View("fig-kernels", "8. Our kernels on real GPUs",
                    "The kernel benchmark (<code>experiments/bench_kernels.py</code>) at the shapes of its issue "
                    "(32 query heads, d<sub>h</sub> = 128, bf16), one colour per GPU. Left: our Triton dense "
                    "kernel's speed over torch SDPA's (dotted red: the 95% target). Right: the whole SparQ step at "
                    "1/8 (r = 16, k = S/16) over the faster of SDPA and our dense, beside the ideal speedup its "
                    "bytes allow (the paper's element count); hover for each phase's time. Measured medians, CUDA "
                    "graphs, inputs rotated to keep L2 cold.", (),
                    {"": F.kernel_benchmark_figure(list(benchmarks))} if benchmarks else {},
                    note="No kernel benchmark was found (<code>reports/kernels/**/kernels.json</code>). On a GPU, run "
                         "<code>python experiments/bench_kernels.py --out reports/kernels/&lt;gpu&gt;</code>, then "
                         "<code>sparq-perf report</code> again."))
    return out


def build_report(pred_rows, measured_rows, out_path, *, sources=(), benchmarks=()) -> Path:
    """Write the report for these rows to out_path; returns the path."""
    import plotly.offline

    pred = frame(pred_rows)
    pred = pred[pred["source"] == "predicted"]
    if pred.empty:
        raise UserError("no predicted rows to report")
    measured = frame(measured_rows)
    measured = measured[(measured["source"] == "measured") & (measured["status"].fillna("ok") == "ok")]
    vs = views(pred, measured, benchmarks)
    controls = {
        "model": _ordered(pred["model"]), "device": _ordered(pred["device"]),
        "batch": [str(b) for b in sorted(int(b) for b in pred["batch"].unique())],
        "setting": [s.label for s in SETTINGS],
    }
    initial = {d: (INITIAL[d] if INITIAL[d] in values else values[0]) for d, values in controls.items()}
    html_text = render_page(
        title="SparQ Attention: predicted decode speedup over dense",
        lede=_lede(pred, measured), controls=controls, initial=initial, views=vs, glossary=GLOSSARY,
        provenance=_provenance(pred, sources, benchmarks), plotly_js=plotly.offline.get_plotlyjs())
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_text, encoding="utf-8")
    return out


def _ordered(values) -> list[str]:
    return [str(v) for v in pd.unique(values)]


def _lede(pred, measured) -> str:
    n_meas = len(measured)
    meas = (f"{n_meas} measured rows from {measured['device'].nunique()} device(s) are shown beside their "
            "predictions." if n_meas else "No measured rows were found: every figure shows predictions only.")
    return ("How much faster SparQ Attention makes LLM decoding than dense attention, from the project's "
            "analytic model (bytes and FLOPs of each operation, over each device's achievable bandwidth and "
            f"compute). {len(pred):,} predicted rows: {pred['model'].nunique()} models × "
            f"{pred['device'].nunique()} devices × {pred['batch'].nunique()} batch sizes × "
            f"{pred['seq_len'].nunique()} sequence lengths × {len(SETTINGS)} SparQ settings. {meas} "
            "Pick a model, device, batch and SparQ setting above; every figure that uses a control follows it. "
            "Hover any point for its exact values and units; terms are defined at the end.")


def _provenance(pred, sources, benchmarks=()) -> list[str]:
    import html

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out = [f"Predictions: <code>sparq-perf report</code> at commit {html.escape(commit)}, {now}; weights "
           f"{', '.join(sorted(pred['weight_dtype'].astype(str).unique()))}, KV cache "
           f"{', '.join(sorted(pred['kv_dtype'].astype(str).unique()))}, local window l = 0, uncalibrated profiles."]
    for s in sources:
        out.append(html.escape(f"Measurements: {s['folder']}/rows.csv ({s['rows']} rows; GPU {s.get('gpu') or '?'}, "
                               f"date {s.get('date') or '?'}, commit {s.get('commit') or '?'}, "
                               f"command {s.get('command') or '?'})"))
    for b in benchmarks:
        out.append(html.escape(f"Kernel benchmark: {b['path']} ({len(b['summary'])} shapes; GPU {b['device']}, "
                               f"date {b.get('date') or '?'}, commit {b.get('commit') or '?'})"))
    return out


GLOSSARY = [
    ("S (sequence length)", "Positions already in the KV cache when a token is decoded (the context length so far)."),
    ("B (batch)", "Sequences decoded together; they share each read of the weights but each has its own KV cache."),
    ("r, k, l", "SparQ's settings: r = components of the query used for approximate scores; k = positions whose "
                "keys and values are fetched; l = most recent positions always kept (inside k; 0 here)."),
    ("compression ratio", "Bytes SparQ's attention transfers divided by the bytes dense attention transfers. In the "
                          "paper's count, (S·r + 2k·d<sub>h</sub> + 4d<sub>h</sub>) / (2S·d<sub>h</sub> + "
                          "2d<sub>h</sub>) ≈ r/(2d<sub>h</sub>) + k/S. A setting 'compression c' picks r = "
                          "d<sub>h</sub>·c and k = S·c/2; 'r=32, k=128' fixes both. The model's own count adds index "
                          "traffic and the score array, so the real ratio is somewhat higher."),
    ("d<sub>h</sub>", "Head dimension (128 for every model shown)."),
    ("dense", "Exact attention over all S positions: reads all of K and V."),
    ("speedup", "Dense time / SparQ time for the same decode work; 2× means SparQ takes half the time."),
    ("TPOT", "Time per output token: one whole decode step, i.e. every layer's weights, attention and the LM head, "
             "for the whole batch; each sequence gains one token per step."),
    ("append", "Write the new key and value into the cache (SparQ also writes the key into K<sup>T</sup> and updates "
               "the running mean of V)."),
    ("dense_attention", "Exact attention over all S positions (dense_decode: the dense attention step, append excluded)."),
    ("sparq_score", "Top-r components of |q| and approximate scores over r rows of K<sup>T</sup>, for all S positions."),
    ("sparq_select", "Top-k positions of the approximate scores."),
    ("sparq_attend", "Gather k rows of K and V, exact attention over them, mix with the running mean of V "
                     "(sparq_decode: score + select + attend)."),
    ("qkv_proj, out_proj, mlp, lm_head, norms", "The operations outside attention: they read the weights once per "
                                                 "step, whatever the method."),
    ("K stored twice", "SparQ reads columns of K to score and rows to attend; it keeps K and its transpose K<sup>T</sup> "
                       "so both reads are contiguous, at 50% more KV memory."),
    ("arithmetic intensity", "FLOPs / bytes moved (read + written) by an operation, in FLOP per byte."),
    ("attained FLOP/s", "FLOPs of an operation / its (predicted or measured) time."),
    ("bandwidth ceiling", "Memory bandwidth × intensity: the most FLOP/s an operation of that intensity can attain "
                          "when limited by memory. Solid: achievable bandwidth (datasheet peak × the profile's "
                          "achievable fraction); dotted: datasheet peak."),
    ("compute ceiling", "bf16 dense matmul FLOP/s (solid: achievable; dotted: datasheet peak). The ridge is where "
                        "the two ceilings meet."),
    ("bound", "Which predicted term wins: memory (bytes / bandwidth), compute (FLOPs / FLOP/s) or overhead "
              "(kernel launches and latency-bound steps)."),
    ("achieved bandwidth", "Bytes an operation reads and writes / its measured time, in GB/s (10<sup>9</sup> "
                           "bytes per second); compare with the device's bandwidth ceiling."),
    ("|error|", "|predicted time − measured time| / measured time, for a measured row."),
    ("largest batch that fits", "floor((usable memory − weight bytes) / KV bytes per sequence); usable memory is "
                                "the device capacity × the profile's usable fraction."),
    ("target compression (rivals)", "Each method's settings chosen so that its attention moves about c of dense's "
                                    "KV bytes at long S (<code>sparq_perf.cost.rivals.params_for_compression</code>); "
                                    "indices, scores and page metadata come on top in the implementation's bytes."),
    ("SparQ", "Approximate scores from the r largest components of |q| over r rows of K<sup>T</sup>, then exact "
              "attention over the top-k positions, mixed with the running mean of V. Keeps K twice (K and "
              "K<sup>T</sup>)."),
    ("SparQ 1xK", f"SparQ with K stored once: the r scattered elements of each key row cost a whole "
                  f"{SparqImpl().sector_bytes}-byte sector each, so scoring reads more bytes, but the cache is "
                  "dense's plus the running mean of V."),
    ("Quest", f"Keys cut into pages of P = {DEFAULT_IMPLS['quest'].page_size} positions, each with the "
              "element-wise min and max of its keys; an upper bound of q·k per page picks the top pages, then exact "
              f"attention over their K and V. Its first {DEFAULT_IMPLS['quest'].dense_layers} layers run dense "
              "attention."),
    ("Double Sparsity", "r channels per KV head, chosen offline, copied into a label cache; scores over the labels "
                        "pick the top-k positions, then exact attention over them."),
    ("Loki", "Keys stored once in a per-head PCA basis: scores from the first r rotated dimensions of each key "
             "row (a strided read of whole sectors), then exact attention over the top-k positions."),
    ("H2O", "Eviction: the cache keeps only k positions, heavy hitters by accumulated attention score plus recent "
            "ones. Reads and memory shrink with k, but evicted tokens cannot be recovered."),
    ("StreamingLLM", f"Eviction (also LM-Infinite): the cache keeps {DEFAULT_IMPLS['streaming-llm'].sinks} initial "
                     "'sink' positions and a window of the most recent ones, k in all; evicted tokens cannot be "
                     "recovered."),
    ("FlexGen top-k", "Exact scores over all of K, then only the top-k rows of V: at least half of dense's bytes, "
                      "so it cannot reach a compression of 1/2 or below."),
    ("eviction", "Dropping positions from the KV cache for good (H2O, StreamingLLM): unlike SparQ and the other "
                 "selection methods, a later query can never attend to an evicted token."),
    ("units", "µs = 10<sup>−6</sup> s, ms = 10<sup>−3</sup> s, GB = 10<sup>9</sup> bytes, GiB = 2<sup>30</sup> "
              "bytes, TB/s = 10<sup>12</sup> bytes per second, 1k positions = 1024."),
]
