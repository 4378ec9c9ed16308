"""Terminal output: aligned tables with units (rich)."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from . import phases as P
from .units import fmt_bytes, fmt_flops, fmt_time

METHOD_LABEL = {"dense": "dense", "sparq": "SparQ", "sparq-1xk": "SparQ 1xK", "quest": "Quest",
                "double-sparsity": "Double Sparsity", "loki": "Loki", "h2o": "H2O", "streaming-llm": "StreamingLLM",
                "flexgen": "FlexGen top-k"}


def _console() -> Console:
    con = Console(highlight=False)
    if not con.is_terminal or con.width < 120:  # piped output: do not squeeze the tables
        con = Console(highlight=False, width=140)
    return con


def fit_message(pred) -> str:
    s, sm = pred.settings, pred.summary
    parts = [f"{METHOD_LABEL.get(m, m)} needs {fmt_bytes(sm[f'{m}.memory_bytes'])} "
             f"({fmt_bytes(sm[f'{m}.over_bytes'])} over)" if not sm[f"{m}.fits"]
             else f"{METHOD_LABEL.get(m, m)} fits ({fmt_bytes(sm[f'{m}.memory_bytes'])})" for m in pred.methods]
    largest = ", ".join(f"{METHOD_LABEL.get(m, m)} {sm[f'{m}.max_batch']}" for m in pred.methods)
    why = ""
    if sm["weights_bytes"] >= sm["usable_bytes"]:  # no batch fits: say so rather than only "0"
        why = f" (the {s.weight_dtype} weights alone, {fmt_bytes(sm['weights_bytes'])}, do not fit)"
    return (f"{s.model.name} at batch {s.batch}, S={s.seq_len} does not fit the {fmt_bytes(sm['usable_bytes'])} usable "
            f"on {s.hw.name}: {'; '.join(parts)}; largest batch that fits: {largest}{why}")


def print_prediction(pred) -> None:
    s, sm, con = pred.settings, pred.summary, _console()
    calib = f"calibrated by {s.calibration.device}" if s.calibration else "uncalibrated (profile peaks x achievable fractions)"
    con.print(f"[bold]{s.model.name}[/] on [bold]{s.hw.name}[/] ({s.hw.description}) | batch {s.batch} | "
              f"S = {s.seq_len} | r = {pred.r}, k = {pred.k}, l = {pred.l} (compression {s.compression:g}) | "
              f"weights {s.weight_dtype}, KV {s.kv_dtype} | {calib}")
    t = Table(title=f"Per layer (x{s.model.n_layers} layers), whole batch, one decode step", title_justify="left")
    for col, just in (("operation", "left"), ("method", "left"), ("read", "right"), ("written", "right"),
                      ("FLOPs", "right"), ("FLOP/B", "right"), ("bound", "left"), ("time", "right")):
        t.add_column(col, justify=just, no_wrap=True)
    shown = set()
    for row in pred.rows:
        if row["scope"] == "step" and row["phase"] == "decode_step":
            continue
        shared = row["phase"] in P.WEIGHT_OPS or row["phase"] in P.STEP_OPS
        if shared and row["phase"] in shown:
            continue
        shown.add(row["phase"])
        label = row["phase"] + (" (once per step)" if row["scope"] == "step" else "")
        t.add_row(label, "all" if shared else METHOD_LABEL.get(row["method"], row["method"]),
                  fmt_bytes(row["bytes_read"]), fmt_bytes(row["bytes_written"]), fmt_flops(row["flops"]),
                  f"{row['intensity_flop_per_byte']:.3g}", row["bound"], fmt_time(row["time_s"]),
                  style="bold" if row["phase"].endswith("_decode") else None)
    con.print(t)

    methods = [m for m in pred.methods if m != "dense"]
    st = Table(title="Summary", title_justify="left")
    st.add_column("quantity")
    for m in pred.methods:
        st.add_column(METHOD_LABEL.get(m, m), justify="right")
    lines = [
        ("attention bytes per layer (append excluded)", "attention_bytes", fmt_bytes),
        ("attention time per layer", "attention_time_s", fmt_time),
        ("compression, paper's formula (M / M_dense)", "paper_compression", lambda v: f"{v:.4f}"),
        ("compression, leading-order KV elements", "element_compression", lambda v: f"{v:.4f}"),
        ("compression, implementation bytes", "impl_compression", lambda v: f"{v:.4f}"),
        ("attention speedup over dense", "speedup_attention", lambda v: f"{v:.2f}x"),
        ("decode step time per token (TPOT)", "tpot_s", fmt_time),
        ("decode step speedup over dense", "speedup_step", lambda v: f"{v:.2f}x"),
        ("tokens/s per sequence", "tokens_per_s_per_sequence", lambda v: f"{v:.4g}"),
        ("tokens/s for the batch", "tokens_per_s", lambda v: f"{v:.4g}"),
        ("KV cache (SparQ: K twice + v_bar; eviction: k positions)", "kv_bytes", fmt_bytes),
        ("weights + KV", "memory_bytes", fmt_bytes),
        ("fits in usable memory", "fits", lambda v: "yes" if v else "NO"),
        ("largest batch that fits", "max_batch", str),
        ("prefill time for the prompt", "prefill_time_s", fmt_time),
    ]
    for label, key, fmt in lines:
        cells = []
        for m in pred.methods:
            v = sm.get(f"{m}.{key}")
            cells.append("1.0000" if v is None and m == "dense" and "compression" in key
                         else "-" if v is None else fmt(v))
        st.add_row(label, *cells)
    con.print(st)
    if any(m not in ("dense", "sparq") for m in pred.methods):
        from .compare import comparison_from

        print_comparison(comparison_from(pred.evaluation, s.compression,
                                         {m: p["reachable"] for m, p in pred.params.items()}, s.impls), con)
    con.print(f"usable memory {fmt_bytes(sm['usable_bytes'])} of {fmt_bytes(s.hw.capacity_bytes)}; "
              f"weights {fmt_bytes(sm['weights_bytes'])}. Times are predictions; "
              f"`sparq-perf measure` checks them on a GPU." if methods else "")


def print_comparison(rows, con=None) -> None:
    """The compare view: one line per (method, S), then the caveats once per method."""
    con = con or _console()
    first = rows[0]
    several_s = len({r["seq_len"] for r in rows}) > 1
    t = Table(title=f"Methods at compression {first['compression']:g} on {first['device']} ({first['model']}, "
                    f"batch {first['batch']}" + ("" if several_s else f", S = {first['seq_len']}") + ")",
              title_justify="left")
    cols = (["S"] if several_s else []) + ["method", "settings", "attn B/layer", "of dense", "attn t/layer",
                                          "attn x", "step x", "KV memory", "max batch"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("method", "settings") else "right", no_wrap=True)
    for r in sorted(rows, key=lambda r: r["seq_len"]) if several_s else rows:
        cells = ([str(r["seq_len"])] if several_s else []) + [
            r["label"] + ("" if r["reachable"] else " (!)"), r["params"], fmt_bytes(r["attention_bytes"]),
            f"{r['impl_compression']:.4f}", fmt_time(r["attention_time_s"]), f"{r['speedup_attention']:.2f}x",
            f"{r['speedup_step']:.2f}x", fmt_bytes(r["kv_bytes"]), str(r["max_batch"])]
        t.add_row(*cells)
    con.print(t)
    seen = {}
    for r in rows:
        if r["note"] and r["label"] not in seen:
            seen[r["label"]] = r["note"]
    for label, note in seen.items():
        con.print(f"{label}: {note}")


def print_profiles(profiles) -> None:
    t = Table(title="Hardware profiles (achievable = peak x measured or assumed fraction)", title_justify="left")
    for col in ("name", "aliases", "kind", "memory", "peak BW", "achievable BW", "bf16 (achievable)", "units", "description"):
        t.add_column(col, justify="right" if col in ("memory", "peak BW", "achievable BW", "bf16 (achievable)", "units") else "left")
    for h in profiles:
        main = max(h.memory_tiers, key=lambda x: x.capacity_bytes)
        t.add_row(h.name, ",".join(h.aliases), h.kind, fmt_bytes(h.capacity_bytes),
                  " + ".join(f"{x.peak_bandwidth_bytes_per_s / 1e9:.4g}" for x in h.memory_tiers) + " GB/s",
                  f"{main.bandwidth_bytes_per_s / 1e9:.4g} GB/s", f"{h.flops_per_s('bf16') / 1e12:.4g} TFLOP/s",
                  str(h.compute_units), h.description)
    _console().print(t)


def print_models(models) -> None:
    t = Table(title="Model architectures", title_justify="left")
    for col in ("name", "params", "layers", "d_model", "heads", "KV heads", "d_head", "d_ff", "vocab", "MLP"):
        t.add_column(col, justify="left" if col in ("name", "MLP") else "right")
    for m in models:
        t.add_row(m.name, f"{m.n_params / 1e9:.2f} B", str(m.n_layers), str(m.d_model), str(m.n_heads), str(m.n_kv_heads),
                  str(m.d_head), str(m.d_ff), str(m.vocab), "gated" if m.gated else "plain")
    _console().print(t)
