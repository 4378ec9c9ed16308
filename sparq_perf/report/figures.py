"""Figures from rows: each function takes the rows of one selection (a pandas DataFrame
with the shared row columns plus `setting`) and returns a Plotly figure as a plain dict
({"data": [...], "layout": {...}}), which plotly.js draws as it is.

Data stay in SI units; they become microseconds, GB or TFLOP/s only here, where a person
reads them, and every hover says the unit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .. import phases as P
from ..hardware import Hardware
from ..memory import kv_bytes_per_sequence, max_batch, weight_bytes
from ..models import Model
from ..units import dtype_bytes
from .grid import SETTINGS
from .page import SIGNIFICANT_DIGITS

METHOD_LABEL = {"dense": "dense", "sparq": "SparQ"}
SETTING_COLORS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")
PHASE_COLORS = {
    P.APPEND: "#7f7f7f", P.DENSE_ATTENTION: "#1f77b4", P.SPARQ_SCORE: "#ff7f0e", P.SPARQ_SELECT: "#d62728",
    P.SPARQ_ATTEND: "#2ca02c", P.DENSE_DECODE: "#17becf", P.SPARQ_DECODE: "#bcbd22", P.QKV_PROJ: "#9467bd",
    P.OUT_PROJ: "#c5b0d5", P.MLP: "#8c564b", P.LM_HEAD: "#e377c2", "norms": "#c7c7c7",
}
NORMS = (P.ATTN_NORM, P.MLP_NORM, P.FINAL_NORM)
# Phases placed on the roofline: attention phases of each method, and the weight matmuls
# (the same for both methods, so shown once).
ROOFLINE_PHASES = (P.APPEND, P.DENSE_ATTENTION, P.SPARQ_SCORE, P.SPARQ_SELECT, P.SPARQ_ATTEND)
WEIGHT_MATMULS = (P.QKV_PROJ, P.OUT_PROJ, P.MLP, P.LM_HEAD)
# Diverging colours for speedup: red below 1 (SparQ slower), white at 1, blue above.
SPEEDUP_COLORS = [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#2166ac"]]
HEATMAP_LOG2_RANGE = 3  # heatmap colours span 1/8x .. 8x (log scale), the same for every selection
ERROR_BAND = 0.2  # the predicted-vs-measured chart shades predictions within +-20% of the measurement

US, MS, GB, TFLOPS = 1e-6, 1e-3, 1e9, 1e12


_SHORT = f"%.{SIGNIFICANT_DIGITS}g"


def _short(v: float):
    """Whole numbers (sequence lengths, k, batch) exactly; others to SIGNIFICANT_DIGITS."""
    return int(v) if v.is_integer() and abs(v) < 2**53 else float(_SHORT % v)


def _list(a) -> list:
    """Numbers for the page: whole numbers exact, others rounded to SIGNIFICANT_DIGITS
    (hover shows at most 4)."""
    values = np.asarray(a, np.float64).tolist()
    if values and isinstance(values[0], list):
        return [[_short(v) for v in row] for row in values]
    return [_short(v) for v in values]


def seq_label(s: int) -> str:
    """1024 -> '1k', 131072 -> '128k'."""
    s = int(s)
    return f"{s // 1024}k" if s >= 1024 and s % 1024 == 0 else str(s)


def _seq_axis(seq_lens, **extra) -> dict:
    ticks = sorted({int(s) for s in seq_lens})
    return {"type": "log", "tickvals": ticks, "ticktext": [seq_label(s) for s in ticks],
            "title": {"text": "sequence length S (positions in the KV cache)"}, **extra}


def _title(text: str) -> dict:
    return {"text": text, "x": 0.0, "xanchor": "left", "font": {"size": 15}}


def _subplot_title(text: str, x: float, y: float = 1.0) -> dict:
    return {"text": f"<b>{text}</b>", "x": x, "y": y, "xref": "paper", "yref": "paper", "showarrow": False,
            "xanchor": "center", "yanchor": "bottom"}


def _base_layout(title: str, **extra) -> dict:
    return {"title": _title(title), "margin": {"l": 70, "r": 20, "t": 70, "b": 60}, "hovermode": "closest",
            "legend": {"orientation": "h", "y": -0.2}, "font": {"family": "system-ui, sans-serif", "size": 12},
            "plot_bgcolor": "#fafafa", **extra}


class Part:
    """The rows of one (method, phase, ...) in a selection: column arrays, sorted by S."""

    def __init__(self, columns: dict, where: slice):
        self._columns, self._where = columns, where

    def __getitem__(self, column: str) -> np.ndarray:
        return self._columns[column][self._where]

    def __len__(self) -> int:
        return self._where.stop - self._where.start


class Rows:
    """The rows of one selection (labels: control -> value), indexed by the `inner` columns."""

    def __init__(self, labels: dict, inner: tuple, columns: dict, slices: dict):
        self.labels, self.inner, self._columns, self._slices = labels, inner, columns, slices

    def get(self, *key) -> Part | None:
        where = self._slices.get(key)
        return None if where is None else Part(self._columns, where)

    def keys(self) -> list:
        return list(self._slices)

    def describe(self) -> str:
        lab = self.labels
        text = f"{lab.get('model')} on {lab.get('device')}"
        if "batch" in lab:
            text += f", batch {lab['batch']}"
        if "setting" in lab:
            text += f", compression {lab['setting']}"
        return text


def split(df: pd.DataFrame, dims: tuple, inner: tuple) -> dict:
    """One `Rows` per selection of `dims` (key: the values joined by '|'), each indexed by `inner`,
    from one sort of the whole table (a figure per selection then costs no pandas work)."""
    if df.empty:
        return {}
    keys = [*dims, *inner]
    df = df.astype({c: "category" for c in keys if df[c].dtype.kind not in "iuf"})  # faster sort and grouping
    df = df.sort_values([*keys, "seq_len"], kind="stable", ignore_index=True)
    columns = {c: df[c].to_numpy() for c in df.columns}
    out, names = {}, {}
    for key, positions in df.groupby(keys, sort=False, observed=True).indices.items():
        key = key if isinstance(key, tuple) else (key,)
        outer = key[:len(dims)]
        if outer not in names:
            labels = [_label(v) for v in outer]
            names[outer] = "|".join(labels)
            out[names[outer]] = Rows(dict(zip(dims, labels)), inner, columns, {})
        out[names[outer]]._slices[key[len(dims):]] = slice(int(positions[0]), int(positions[-1]) + 1)
    return out


def _label(v) -> str:
    return str(int(v)) if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


def _aligned(a: Part, b: Part):
    """Indices of the S both parts have, in order."""
    _, ia, ib = np.intersect1d(a["seq_len"], b["seq_len"], return_indices=True)
    return ia, ib


def _speedups(rows: Rows, dense_phase: str, sparq_phase: str, setting: str) -> dict | None:
    """dense time / SparQ time at each S where both exist."""
    d, q = rows.get(setting, "dense", dense_phase), rows.get(setting, "sparq", sparq_phase)
    if d is None or q is None:
        return None
    ia, iq = _aligned(d, q)
    if not len(ia):
        return None
    dense, sparq = d["time_s"][ia], q["time_s"][iq]
    return {"seq_len": q["seq_len"][iq], "dense": dense, "sparq": sparq, "speedup": dense / sparq,
            "r": q["r"][iq], "k": q["k"][iq]}


def _measured_speedups(measured: Rows | None, setting: str) -> dict | None:
    """Measured attention speedups: dense attention time / SparQ decode time at the same point."""
    if measured is None:
        return None
    for dense_phase in (P.DENSE_DECODE, P.DENSE_ATTENTION):
        out = _speedups(measured, dense_phase, P.SPARQ_DECODE, setting)
        if out is not None:
            return out
    return None


# ---------------------------------------------------------------------------------------
# 1. Speedup against sequence length  (rows indexed by setting, method, phase)

def speedup_figure(rows: Rows, measured: Rows | None = None, settings=SETTINGS) -> dict:
    """SparQ's speedup over dense against S, one line per setting: attention of one layer
    (left) and the whole decode step, i.e. TPOT (right). Measured attention speedups as crosses."""
    data, seqs = [], set()
    panels = (("x", "y", P.DENSE_DECODE, P.SPARQ_DECODE, "attention (one layer)", "µs", US),
              ("x2", "y2", "decode_step", "decode_step", "whole decode step (TPOT)", "ms", MS))
    for i, s in enumerate(settings):
        color = SETTING_COLORS[i % len(SETTING_COLORS)]
        for j, (xa, ya, dp, sp, what, unit, scale) in enumerate(panels):
            sp_ = _speedups(rows, dp, sp, s.label)
            if sp_ is None:
                continue
            seqs.update(_list(sp_["seq_len"]))
            data.append({
                "type": "scatter", "mode": "lines+markers", "name": f"compression {s.label}", "legendgroup": s.label,
                "showlegend": j == 0, "xaxis": xa, "yaxis": ya, "line": {"color": color}, "marker": {"size": 6},
                "x": _list(sp_["seq_len"]), "y": _list(sp_["speedup"]),
                "customdata": _list(np.column_stack([sp_["r"], sp_["k"], sp_["dense"] / scale, sp_["sparq"] / scale])),
                "hovertemplate": (f"<b>{what}</b><br>S = %{{x:,}}<br>speedup = %{{y:.3f}}×<br>"
                                  f"r = %{{customdata[0]}}, k = %{{customdata[1]:,}}<br>"
                                  f"dense %{{customdata[2]:.4g}} {unit}, SparQ %{{customdata[3]:.4g}} {unit}"
                                  f"<extra>compression {s.label}</extra>"),
            })
        m = _measured_speedups(measured, s.label)
        if m is not None:
            data.append({
                "type": "scatter", "mode": "markers", "name": f"measured, {s.label}", "legendgroup": s.label,
                "xaxis": "x", "yaxis": "y", "marker": {"symbol": "x", "size": 11, "color": color},
                "x": _list(m["seq_len"]), "y": _list(m["speedup"]),
                "customdata": _list(np.column_stack([m["r"], m["k"], m["dense"] / US, m["sparq"] / US])),
                "hovertemplate": ("<b>measured attention</b><br>S = %{x:,}<br>speedup = %{y:.3f}×<br>"
                                  "r = %{customdata[0]}, k = %{customdata[1]:,}<br>"
                                  "dense %{customdata[2]:.4g} µs, SparQ %{customdata[3]:.4g} µs"
                                  f"<extra>measured {s.label}</extra>"),
            })
    ytitle = {"title": {"text": "speedup (dense time / SparQ time)"}, "rangemode": "tozero"}
    layout = _base_layout(
        f"SparQ speedup over dense: {rows.describe()}",
        xaxis=_seq_axis(seqs, domain=[0, 0.46]), xaxis2=_seq_axis(seqs, domain=[0.54, 1]),
        yaxis=ytitle, yaxis2={**ytitle, "anchor": "x2"},
        annotations=[_subplot_title("attention, one layer", 0.23), _subplot_title("whole decode step (TPOT)", 0.77)],
        shapes=[{"type": "line", "xref": f"{xa} domain", "yref": ya, "x0": 0, "x1": 1, "y0": 1, "y1": 1,
                 "line": {"dash": "dot", "color": "#555", "width": 1}} for xa, ya in (("x", "y"), ("x2", "y2"))],
    )
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------------------
# 2. Roofline  (rows indexed by method, phase)

def roofline_figure(rows: Rows, hw: Hardware | None, measured: Rows | None = None) -> dict:
    """FLOP/s attained against arithmetic intensity, under the device's bandwidth and compute
    ceilings; one trace per (method, phase) over the S of the grid."""
    points = []
    for method, phase in [(m, p) for m in ("dense", "sparq") for p in ROOFLINE_PHASES] + \
                         [("dense", p) for p in WEIGHT_MATMULS]:
        part = rows.get(method, phase)
        if part is None:
            continue
        ok = (part["flops"] > 0) & (part["time_s"] > 0)
        if ok.any():
            name = f"{phase} (both)" if phase in WEIGHT_MATMULS else f"{METHOD_LABEL[method]} {phase}"
            points.append((method, phase, name, {c: part[c][ok] for c in (
                "seq_len", "intensity_flop_per_byte", "flops", "time_s", "bytes_read", "bytes_written", "bound")}))
    measured_points = []
    for key in (measured.keys() if measured is not None else []):
        part = measured.get(*key)
        ok = (part["flops"] > 0) & (part["time_s"] > 0)
        if ok.any():
            measured_points.append((key, {c: part[c][ok] for c in (
                "seq_len", "intensity_flop_per_byte", "flops", "time_s", "achieved_bytes_per_s")}))
    xs = [p["intensity_flop_per_byte"] for *_, p in points] + [p["intensity_flop_per_byte"] for _, p in measured_points]
    lo = min([0.1] + [float(x.min()) / 2 for x in xs])
    hi = max([1e4] + [float(x.max()) * 2 for x in xs])
    data = _ceilings(hw, lo, hi) if hw is not None else []
    for method, phase, name, p in points:
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": name,
            "line": {"color": PHASE_COLORS[phase], "width": 1, "dash": "dot" if method == "dense" else "solid"},
            "marker": {"symbol": "circle" if method == "dense" else "diamond", "size": 7, "color": PHASE_COLORS[phase]},
            "x": _list(p["intensity_flop_per_byte"]), "y": _list((p["flops"] / p["time_s"])),
            "customdata": _list(np.column_stack([p["seq_len"], p["time_s"] / US,
                                           (p["bytes_read"] + p["bytes_written"]) / 1e6])),
            "text": p["bound"].tolist(),
            "hovertemplate": (f"<b>{name}</b><br>S = %{{customdata[0]:,}}<br>intensity %{{x:.4g}} FLOP/byte<br>"
                              "attained %{y:.4g} FLOP/s<br>time %{customdata[1]:.4g} µs, moves "
                              "%{customdata[2]:.4g} MB<br>bound: %{text}<extra></extra>"),
        })
    for (method, phase), p in measured_points:
        data.append({
            "type": "scatter", "mode": "markers", "name": f"measured {method} {phase}",
            "marker": {"symbol": "x", "size": 10, "color": PHASE_COLORS.get(phase, "#000")},
            "x": _list(p["intensity_flop_per_byte"]), "y": _list((p["flops"] / p["time_s"])),
            "customdata": _list(np.column_stack([p["seq_len"], p["time_s"] / US,
                                           np.nan_to_num(p["achieved_bytes_per_s"].astype(float)) / GB])),
            "hovertemplate": (f"<b>measured {method} {phase}</b><br>S = %{{customdata[0]:,}}<br>"
                              "intensity %{x:.4g} FLOP/byte<br>attained %{y:.4g} FLOP/s<br>"
                              "time %{customdata[1]:.4g} µs<br>achieved bandwidth %{customdata[2]:.4g} GB/s"
                              "<extra></extra>"),
        })
    layout = _base_layout(
        f"Roofline: {rows.describe()}",
        xaxis={"type": "log", "title": {"text": "arithmetic intensity (FLOP per byte moved)"}},
        yaxis={"type": "log", "title": {"text": "attained FLOP/s (FLOPs / time)"}},
        legend={"orientation": "v", "x": 1.02, "y": 1}, margin={"l": 70, "r": 230, "t": 70, "b": 60}, height=560,
    )
    return {"data": data, "layout": layout}


def _ceilings(hw: Hardware, lo: float, hi: float) -> list[dict]:
    """min(bandwidth x intensity, bf16 FLOP/s): achievable (solid) and datasheet peak (dotted).
    Straight on log-log axes, so three points (ends and ridge) draw each."""
    out = []
    tier = max(hw.memory_tiers, key=lambda t: t.capacity_bytes)
    for kind, bw, flops, dash in (("achievable", tier.bandwidth_bytes_per_s, hw.flops_per_s("bf16"), "solid"),
                                  ("datasheet peak", tier.peak_bandwidth_bytes_per_s, hw.peak_flops_per_s["bf16"], "dot")):
        ridge = flops / bw
        xs = [lo, min(max(ridge, lo), hi), hi]
        out.append({
            "type": "scatter", "mode": "lines", "name": f"ceiling, {kind}", "x": xs,
            "y": [min(bw * x, flops) for x in xs],
            "line": {"color": "#222", "width": 2 if dash == "solid" else 1, "dash": dash},
            "hovertemplate": (f"<b>{kind} ceiling</b><br>{tier.name} bandwidth {bw / 1e12:.4g} TB/s × intensity<br>"
                              f"bf16 compute {flops / TFLOPS:.4g} TFLOP/s<br>ridge at {ridge:.4g} FLOP/byte"
                              "<extra></extra>"),
        })
    return out


# ---------------------------------------------------------------------------------------
# 3. Time per phase  (rows indexed by method, phase)

def phase_time_figure(rows: Rows) -> dict:
    """Stacked time per phase, dense beside SparQ at each S: attention of one layer (top) and the
    whole decode step (bottom: each operation times the times it runs per step)."""
    methods = [m for m in ("dense", "sparq") if any(k[0] == m for k in rows.keys())]
    seqs = sorted({int(s) for k in rows.keys() for s in rows.get(*k)["seq_len"]})
    cats = [[seq_label(s) for s in seqs for _ in methods], [METHOD_LABEL[m] for _ in seqs for m in methods]]
    data = []

    def bars(phases, per_step: bool, name: str, show: bool):
        total = np.zeros((len(seqs), len(methods)))
        found = np.zeros_like(total, bool)
        for j, m in enumerate(methods):
            for phase in phases:
                part = rows.get(m, phase)
                if part is None:
                    continue
                i = np.searchsorted(seqs, part["seq_len"])
                total[i, j] += part["time_s"] * (part["count"] if per_step else 1.0)
                found[i, j] = True
        if not found.any():
            return
        scale, unit, xa, ya = (MS, "ms per step", "x2", "y2") if per_step else (US, "µs per layer", "x", "y")
        values = [float(v) / scale if f else None for v, f in zip(total.ravel(), found.ravel())]
        data.append({"type": "bar", "name": name, "legendgroup": name, "showlegend": show, "xaxis": xa, "yaxis": ya,
                     "x": cats, "y": values, "marker": {"color": PHASE_COLORS[name]},
                     "hovertemplate": f"<b>{name}</b><br>S = %{{x}}<br>%{{y:.4g}} {unit}<extra></extra>"})

    for phase in ROOFLINE_PHASES:
        bars((phase,), False, phase, True)
    for phase in WEIGHT_MATMULS + ROOFLINE_PHASES:
        bars((phase,), True, phase, phase in WEIGHT_MATMULS)
    bars(NORMS, True, "norms", True)
    layout = _base_layout(
        f"Time per phase, dense vs SparQ: {rows.describe()}", barmode="stack", height=720,
        xaxis={"type": "multicategory", "anchor": "y"},
        yaxis={"domain": [0.58, 1], "title": {"text": "time per layer (µs)"}},
        xaxis2={"type": "multicategory", "anchor": "y2"},
        yaxis2={"domain": [0, 0.42], "title": {"text": "time per decode step (ms)"}},
        annotations=[_subplot_title("attention of one layer (append, then the method's phases)", 0.5, 1.0),
                     _subplot_title("whole decode step = TPOT (every operation × the times it runs)", 0.5, 0.43)],
        legend={"orientation": "v", "x": 1.02, "y": 1}, margin={"l": 70, "r": 150, "t": 70, "b": 60},
    )
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------------------
# 4. Predicted vs measured

def error_stats(measured: pd.DataFrame) -> pd.DataFrame:
    """Per (method, phase): n, median and 90th percentile of |predicted - measured| / measured."""
    m = measured[(measured["time_s"] > 0) & measured["predicted_time_s"].notna()]
    err = ((m["predicted_time_s"] - m["time_s"]) / m["time_s"]).abs()
    g = err.groupby([m["method"], m["phase"]])
    return pd.DataFrame({"n": g.size(), "median": g.median(), "p90": g.quantile(0.9)}).reset_index()


def accuracy_figure(measured: pd.DataFrame) -> dict:
    """Measured against predicted time, one colour per phase, y = x and a ±20% band; the median
    and 90th-percentile |error| of each phase written on the chart."""
    m = measured[(measured["time_s"] > 0) & measured["predicted_time_s"].notna()]
    lo = float(min(m["time_s"].min(), m["predicted_time_s"].min())) / US / 1.5
    hi = float(max(m["time_s"].max(), m["predicted_time_s"].max())) / US * 1.5
    xs = np.geomspace(lo, hi, 40).tolist()
    data = [
        {"type": "scatter", "mode": "lines", "x": xs, "y": [x / (1 + ERROR_BAND) for x in xs], "hoverinfo": "skip",
         "line": {"width": 0}, "showlegend": False},
        {"type": "scatter", "mode": "lines", "x": xs, "y": [x / (1 - ERROR_BAND) for x in xs], "hoverinfo": "skip",
         "fill": "tonexty", "fillcolor": "rgba(44,160,44,0.15)", "line": {"width": 0},
         "name": f"prediction within ±{ERROR_BAND:.0%}"},
        {"type": "scatter", "mode": "lines", "x": xs, "y": xs, "name": "y = x (perfect prediction)",
         "line": {"color": "#222", "dash": "dash", "width": 1}, "hoverinfo": "skip"},
    ]
    for (method, phase), rows in m.groupby(["method", "phase"], sort=True):
        err = (rows["predicted_time_s"] - rows["time_s"]) / rows["time_s"]
        data.append({
            "type": "scatter", "mode": "markers", "name": f"{method} {phase}",
            "marker": {"size": 8, "color": PHASE_COLORS.get(phase), "symbol": "circle" if method != "sparq" else "diamond",
                       "line": {"width": 0.5, "color": "#fff"}},
            "x": (rows["predicted_time_s"] / US).tolist(), "y": (rows["time_s"] / US).tolist(),
            "customdata": _list(np.column_stack([rows["batch"], rows["seq_len"], rows["r"].fillna(0), rows["k"].fillna(0),
                                           err * 100])),
            "text": (rows["device"] + ", " + rows["model"]).tolist(),
            "hovertemplate": (f"<b>{method} {phase}</b> (%{{text}})<br>batch %{{customdata[0]}}, S = %{{customdata[1]:,}}, "
                              "r = %{customdata[2]}, k = %{customdata[3]:,}<br>predicted %{x:.4g} µs<br>"
                              "measured %{y:.4g} µs<br>error %{customdata[4]:+.1f}%<extra></extra>"),
        })
    stats = error_stats(m)
    lines = ["<b>|error| = |predicted − measured| / measured</b>", "phase: median, 90th percentile (n)"]
    lines += [f"{r.method} {r.phase}: {r.median:.1%}, {r.p90:.1%} ({r.n})" for r in stats.itertuples()]
    err_all = ((m["predicted_time_s"] - m["time_s"]) / m["time_s"]).abs()
    lines.append(f"<b>all: {err_all.median():.1%}, {err_all.quantile(0.9):.1%} ({len(m)})</b>")
    devices = ", ".join(sorted(m["device"].astype(str).unique()))
    layout = _base_layout(
        f"Predicted vs measured time per phase ({devices})",
        xaxis={"type": "log", "title": {"text": "predicted time (µs)"}},
        yaxis={"type": "log", "title": {"text": "measured time, median (µs)"}},
        legend={"orientation": "v", "x": 1.02, "y": 0.5}, margin={"l": 70, "r": 220, "t": 70, "b": 60}, height=620,
        annotations=[{"text": "<br>".join(lines), "xref": "paper", "yref": "paper", "x": 0.01, "y": 0.99,
                      "xanchor": "left", "yanchor": "top", "showarrow": False, "align": "left",
                      "bgcolor": "rgba(255,255,255,0.85)", "bordercolor": "#999", "borderwidth": 1}],
    )
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------------------
# 5. Memory  (rows indexed by method, phase)

def memory_figure(rows: Rows, model: Model, hw: Hardware) -> dict:
    """KV cache bytes of dense and SparQ (K stored twice, plus v_bar) against S at the selected
    batch, beside the room the device has for KV; and the largest batch that fits."""
    part = rows.get(*rows.keys()[0])
    seqs = np.array(sorted({int(s) for k in rows.keys() for s in rows.get(*k)["seq_len"]}))
    batch = int(rows.labels["batch"])
    kv_e = dtype_bytes(str(part["kv_dtype"][0]))
    weights = weight_bytes(model, dtype_bytes(str(part["weight_dtype"][0])))
    room = hw.usable_bytes - weights
    data = []
    for method, dash, color in (("dense", "solid", "#1f77b4"), ("sparq", "dash", "#ff7f0e")):
        per_seq = kv_bytes_per_sequence(model, seqs, kv_e, method)
        label = METHOD_LABEL[method] + (" (K stored twice)" if method == "sparq" else "")
        data.append({"type": "scatter", "mode": "lines+markers", "name": label, "legendgroup": method,
                     "x": seqs.tolist(), "y": _list((per_seq * batch / GB)), "line": {"color": color, "dash": dash},
                     "hovertemplate": f"<b>{label}</b><br>S = %{{x:,}}<br>KV cache %{{y:.4g}} GB at batch {batch}"
                                      "<extra></extra>"})
        data.append({"type": "scatter", "mode": "lines+markers", "name": label, "legendgroup": method,
                     "showlegend": False, "xaxis": "x2", "yaxis": "y2", "x": seqs.tolist(),
                     "y": [int(b) if b > 0 else None for b in max_batch(hw.usable_bytes, weights, per_seq)], "line": {"color": color, "dash": dash},
                     "hovertemplate": f"<b>{label}</b><br>S = %{{x:,}}<br>largest batch that fits: %{{y:,}}"
                                      "<extra></extra>"})
    data.append({"type": "scatter", "mode": "lines", "name": f"room for KV on {hw.name}",
                 "x": [int(seqs[0]), int(seqs[-1])], "y": [room / GB] * 2, "line": {"color": "#d62728", "dash": "dot"},
                 "hovertemplate": (f"usable memory {hw.usable_bytes / GB:.4g} GB − weights {weights / GB:.4g} GB"
                                   " = %{y:.4g} GB<extra></extra>")})
    layout = _base_layout(
        f"Memory: {model.name} on {hw.name}, batch {batch}",
        xaxis=_seq_axis(seqs, domain=[0, 0.46]), xaxis2=_seq_axis(seqs, domain=[0.54, 1]),
        yaxis={"type": "log", "title": {"text": "KV cache, whole batch (GB)"}},
        yaxis2={"type": "log", "anchor": "x2", "title": {"text": "largest batch that fits (sequences)"}},
        annotations=[_subplot_title(f"KV cache bytes at batch {batch}", 0.23),
                     _subplot_title(f"largest batch that fits on {hw.name}", 0.77)],
    )
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------------------
# 6. Heatmap  (rows indexed by method, phase, batch)

def heatmap_figure(rows: Rows) -> dict:
    """Speedup over (batch, S): attention of one layer (left) and the whole decode step (right)."""
    batches = sorted({int(k[2]) for k in rows.keys()})
    seqs = sorted({int(s) for k in rows.keys() for s in rows.get(*k)["seq_len"]})
    data = []
    for i, (xa, ya, dp, sp, what) in enumerate((("x", "y", P.DENSE_DECODE, P.SPARQ_DECODE, "attention, one layer"),
                                                ("x2", "y2", "decode_step", "decode_step", "whole decode step"))):
        z = [[None] * len(seqs) for _ in batches]
        for bi, b in enumerate(batches):
            d, q = rows.get("dense", dp, b), rows.get("sparq", sp, b)
            if d is None or q is None:
                continue
            ia, iq = _aligned(d, q)
            for s, v in zip(q["seq_len"][iq], d["time_s"][ia] / q["time_s"][iq]):
                z[bi][seqs.index(int(s))] = float(v)
        colour = [[None if v is None else float(np.log2(v)) for v in row] for row in z]
        data.append({
            "type": "heatmap", "xaxis": xa, "yaxis": ya, "coloraxis": "coloraxis", "name": what,
            "x": [seq_label(s) for s in seqs], "y": [f"B={b}" for b in batches], "z": colour, "customdata": z,
            "text": [["" if v is None else f"{v:.2f}×" for v in row] for row in z], "texttemplate": "%{text}",
            "hovertemplate": f"<b>{what}</b><br>%{{y}}, S = %{{x}}<br>speedup %{{customdata:.3f}}×<extra></extra>",
        })
    layout = _base_layout(
        f"Speedup over batch and sequence length: {rows.describe()}",
        xaxis={"domain": [0, 0.44], "title": {"text": "sequence length S"}},
        xaxis2={"domain": [0.5, 0.94], "title": {"text": "sequence length S"}},
        yaxis={"title": {"text": "batch B"}}, yaxis2={"anchor": "x2"},
        coloraxis={"colorscale": SPEEDUP_COLORS, "cmin": -HEATMAP_LOG2_RANGE, "cmax": HEATMAP_LOG2_RANGE,
                   "colorbar": {"title": {"text": "speedup"}, "tickvals": list(range(-HEATMAP_LOG2_RANGE, HEATMAP_LOG2_RANGE + 1)),
                                "ticktext": [f"{2.0 ** e:g}×" for e in range(-HEATMAP_LOG2_RANGE, HEATMAP_LOG2_RANGE + 1)]}},
        annotations=[_subplot_title("attention, one layer", 0.22), _subplot_title("whole decode step (TPOT)", 0.72)],
    )
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------------------
# 7. SparQ among its rivals  (rows of `grid.rival_rows`, indexed by method)

GIB = 2.0**30
# method -> (colour, line width); eviction methods are drawn dashed, methods that cannot reach
# the target compression dotted.
RIVAL_STYLE = {"dense": ("#222", 1), "sparq": ("#1f77b4", 3.5), "sparq-1xk": ("#6baed6", 2), "quest": ("#ff7f0e", 2),
               "double-sparsity": ("#2ca02c", 2), "loki": ("#9467bd", 2), "h2o": ("#8c564b", 2),
               "streaming-llm": ("#e377c2", 2), "flexgen": ("#7f7f7f", 2)}


def rival_dash(part: Part) -> str:
    if part["evicts"][0]:
        return "dash"
    return "solid" if part["reachable"].all() else "dot"


def rivals_figure(rows: Rows) -> dict:
    """Each method at its own settings for the selected compression: whole-step speedup over dense
    (left) and KV cache of one sequence (right) against S. Eviction methods dashed; open markers
    where the selected batch does not fit; on the right, the room for KV per sequence at that batch.
    Hover texts name neither batch nor device (the title does), so selections share them."""
    batch, device = int(rows.labels["batch"]), rows.labels["device"]
    data, seqs, room = [], set(), None
    for (method,) in sorted(rows.keys(), key=lambda k: list(RIVAL_STYLE).index(k[0]) if k[0] in RIVAL_STYLE else 99):
        p = rows.get(method)
        seqs.update(int(s) for s in p["seq_len"])
        room = float(p["kv_room_bytes"][0])
        color, width = RIVAL_STYLE.get(method, ("#000", 2))
        line = {"color": color, "width": width, "dash": rival_dash(p)}
        name, note = str(p["label"][0]), "".join(f"<br><i>{n}</i>" for n in str(p["note"][0]).split("; ") if n)
        common = {"type": "scatter", "mode": "lines+markers", "name": name, "legendgroup": method, "line": line,
                  "x": p["seq_len"].tolist()}
        fits = p["fits"].astype(bool)
        data.append({
            **common, "text": p["params"].tolist(), "y": _list(p["speedup_step"]),
            "marker": {"size": 7, "symbol": "circle" if fits.all() else np.where(fits, 0, 100).tolist()},  # 100: open
            "hovertemplate": (f"<b>{name}</b> (%{{text}})<br>S = %{{x:,}}<br>whole step: %{{y:.3f}}× dense"
                              f"{note}<extra></extra>"),
        })
        data.append({
            **common, "showlegend": False, "xaxis": "x2", "yaxis": "y2", "marker": {"size": 6},
            "y": _list(p["kv_bytes_per_sequence"] / GIB), "customdata": p["max_batch"].tolist(),
            "hovertemplate": (f"<b>{name}</b><br>S = %{{x:,}}<br>KV cache %{{y:.4g}} GiB per sequence"
                              f"<br>largest batch that fits: %{{customdata:,}}{note}<extra></extra>"),
        })
    seqs = sorted(seqs)
    annotations = [_subplot_title("whole decode step (TPOT)", 0.23),
                   _subplot_title("KV cache of one sequence, all layers", 0.77)]
    if room is not None and room > 0:
        data.append({"type": "scatter", "mode": "lines", "name": "room for KV per sequence at this batch",
                     "xaxis": "x2", "yaxis": "y2", "x": [seqs[0], seqs[-1]], "y": _list([room / batch / GIB] * 2),
                     "line": {"color": "#d62728", "dash": "dot", "width": 1.5},
                     "hovertemplate": ("(usable memory − weights) / batch<br>= %{y:.4g} GiB per sequence: "
                                       "above this line the batch does not fit<extra></extra>")})
    else:
        annotations.append({"text": f"the weights alone do not fit in {device}'s usable memory", "xref": "paper",
                            "yref": "paper", "x": 0.77, "y": 0.95, "showarrow": False, "bgcolor": "#fff8e1"})
    layout = _base_layout(
        f"SparQ among its rivals: {rows.describe()}",
        xaxis=_seq_axis(seqs, domain=[0, 0.46]), xaxis2=_seq_axis(seqs, domain=[0.54, 1]),
        yaxis={"title": {"text": "speedup over dense (dense step time / method's)"}, "rangemode": "tozero"},
        yaxis2={"type": "log", "anchor": "x2", "dtick": "D2", "title": {"text": "KV cache per sequence (GiB)"}},
        annotations=annotations, height=560, legend={"orientation": "h", "y": -0.22},
    )
    return {"data": data, "layout": layout}


# ---------------------------------------------------------------------------------------
# 8. Kernel benchmark  (experiments/bench_kernels.py's summary rows, one list per GPU)

BENCH_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
DENSE_TARGET = 0.95  # our dense kernel's target: at least this fraction of SDPA's speed


def shape_label(row: dict, n_heads: int = 32) -> str:
    """'B=1 S=32k MHA' or '... GQA' (fewer KV heads than query heads)."""
    kind = "MHA" if int(row["Hkv"]) == n_heads else f"GQA {row['Hkv']} KV"
    return f"B={row['B']} S={seq_label(row['S'])} {kind}"


def kernel_benchmark_figure(benchmarks: list[dict]) -> dict:
    """Left: our dense kernel's speed over torch SDPA at each benchmark shape (a dotted line at
    the 95% target). Right: SparQ at 1/8 (r=16, k=S/16), its whole step over the faster of SDPA
    and our dense, bars, beside the ideal speedup from the bytes (markers). One colour per GPU."""
    data = []
    labels = []
    for b in benchmarks:
        for row in b["summary"]:
            if shape_label(row) not in labels:
                labels.append(shape_label(row))
    for i, b in enumerate(benchmarks):
        color = BENCH_COLORS[i % len(BENCH_COLORS)]
        rows = b["summary"]
        x = [shape_label(r) for r in rows]
        tag = [f"r16k{int(r['S']) // 16}" for r in rows]
        data.append({
            "type": "bar", "name": f"{b['device']}: dense / SDPA", "x": x, "y": _list([r["dense_vs_sdpa"] for r in rows]),
            "marker": {"color": color}, "xaxis": "x", "yaxis": "y", "legendgroup": b["device"],
            "customdata": _list([[r["sdpa_us"], r["dense_us"], r["dense_vs_copy"]] for r in rows]),
            "hovertemplate": (f"<b>{b['device']}</b> %{{x}}<br>SDPA %{{customdata[0]:.4g}} µs, our dense "
                              "%{customdata[1]:.4g} µs<br>speed over SDPA %{y:.3f}<br>"
                              "achieved / copy bandwidth %{customdata[2]:.3f}<extra></extra>"),
        })
        data.append({
            "type": "bar", "name": f"{b['device']}: SparQ 1/8 achieved", "x": x,
            "y": _list([r[t + "_speedup"] for r, t in zip(rows, tag)]), "marker": {"color": color, "opacity": 0.75},
            "xaxis": "x2", "yaxis": "y2", "legendgroup": b["device"],
            "customdata": _list([[r[t + "_us"], r[t + "_score_us"], r[t + "_select_us"], r[t + "_attend_us"],
                                  r[t + "_frac_ideal"]] for r, t in zip(rows, tag)]),
            "hovertemplate": (f"<b>{b['device']}</b> %{{x}}, SparQ r=16, k=S/16<br>step %{{customdata[0]:.4g}} µs "
                              "(score %{customdata[1]:.4g}, select %{customdata[2]:.4g}, attend %{customdata[3]:.4g} µs)"
                              "<br>speedup %{y:.2f}x, %{customdata[4]:.2f} of ideal<extra></extra>"),
        })
        data.append({
            "type": "scatter", "mode": "markers", "name": f"{b['device']}: ideal (bytes)", "x": x,
            "y": _list([r[t + "_ideal"] for r, t in zip(rows, tag)]), "xaxis": "x2", "yaxis": "y2",
            "legendgroup": b["device"], "marker": {"symbol": "line-ew-open", "size": 16, "color": color,
                                                   "line": {"width": 2, "color": color}},
            "hovertemplate": f"<b>{b['device']}</b> %{{x}}<br>ideal speedup %{{y:.2f}}x<extra></extra>",
        })
    target = {"type": "line", "xref": "x domain", "yref": "y", "x0": 0, "x1": 1, "y0": DENSE_TARGET, "y1": DENSE_TARGET,
              "line": {"dash": "dot", "color": "#d62728", "width": 1}}
    one = {"type": "line", "xref": "x2 domain", "yref": "y2", "x0": 0, "x1": 1, "y0": 1, "y1": 1,
           "line": {"color": "#222", "width": 1}}
    axis = {"categoryorder": "array", "categoryarray": labels, "tickangle": -35}
    layout = _base_layout(
        "Our kernels on real GPUs: dense against SDPA, SparQ 1/8 against its ideal",
        barmode="group", height=560, shapes=[target, one], margin={"l": 70, "r": 20, "t": 90, "b": 150},
        xaxis={**axis, "domain": [0.0, 0.45]}, xaxis2={**axis, "domain": [0.55, 1.0], "anchor": "y2"},
        yaxis={"title": {"text": "our dense speed / SDPA speed"}, "rangemode": "tozero"},
        yaxis2={"title": {"text": "speedup over the faster dense (x)"}, "anchor": "x2", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.45},
        annotations=[_subplot_title("dense kernel / torch SDPA (dotted: 95% target)", 0.225),
                     _subplot_title("SparQ 1/8 step: achieved (bars), ideal (dashes)", 0.775)],
    )
    return {"data": data, "layout": layout}
