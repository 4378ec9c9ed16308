"""`sparq-perf measure`: identify the GPU, measure its ceilings, time every phase of every
sweep point beside its prediction, and fit a calibration.

Needs a CUDA GPU, torch and triton; imports nothing from the report (plotly is not needed).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from .. import phases as P
from .. import rows as R
from ..errors import UserError
from ..hardware import builtin_profiles, get_profile
from ..phase_model import model_method, predict_phases
from ..workload import Workload
from .sweep import Point, load_sweep

# Fraction of free GPU memory a point's buffers may take (the rest: scratch, allocator slack).
MEMORY_HEADROOM = 0.8


def _require_cuda():
    try:
        import torch
    except ImportError:
        raise UserError("measure needs torch and triton with a CUDA GPU (pip install '.[gpu]'); "
                        "predict needs neither") from None
    if not torch.cuda.is_available():
        raise UserError("measure needs a CUDA GPU and none is visible; `sparq-perf predict` needs no GPU")
    return torch


def git_commit(explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.environ.get("SPARQ_PERF_COMMIT"):
        return os.environ["SPARQ_PERF_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def point_bytes(p: Point, n_buffers: int = 1) -> float:
    """GPU bytes one point's buffers take: K, K^T and V of one layer (+ fp32 scores), per copy."""
    from ..units import dtype_bytes

    e = dtype_bytes(p.kv_dtype)
    kv = 3.0 * p.batch * p.n_kv_heads * p.seq_len * p.d_head * e
    scores = 4.0 * p.batch * p.n_kv_heads * p.seq_len
    return n_buffers * (kv + scores)


def twin_rows(p: Point, hw, measured: list[dict], base: dict, copy_bw: float) -> list[dict]:
    """Rows for one (model, B, S) group: each measured phase beside its predicted time (the
    profile's figures with this device's measured copy bandwidth).

    `measured` holds dicts with method, phase, r, k (None for dense), time_s, time_p20_s,
    time_p80_s and optionally max_rel_error."""
    from ..units import dtype_bytes

    out = []
    for m in measured:
        phase = m["phase"]
        r = m.get("r") or p.r
        k = m.get("k") or p.k
        w = Workload(p.batch, p.seq_len, p.n_heads, p.n_kv_heads, p.d_head, r, k, p.l, dtype_bytes(p.kv_dtype), 2.0)
        pred = predict_phases(hw, w, model_method(m["method"], phase), copy_bandwidth_bytes_per_s=copy_bw).get(phase)
        row = {**base, **{c: m.get(c) for c in ("method", "phase", "r", "k", "time_s", "time_p20_s", "time_p80_s",
                                                "max_rel_error")},
               "scope": "layer", "count": 1.0, "status": m.get("status", "ok")}
        if pred is not None:
            cost, est = pred
            row.update(bytes_read=float(cost.bytes_read), bytes_written=float(cost.bytes_written),
                       flops=float(cost.flops), intensity_flop_per_byte=float(cost.intensity_flop_per_byte),
                       memory_time_s=float(est.memory_time_s), compute_time_s=float(est.compute_time_s),
                       overhead_time_s=float(est.overhead_time_s), bound=str(est.bound),
                       predicted_time_s=float(est.time_s))
            if m.get("time_s"):
                row["achieved_bytes_per_s"] = (row["bytes_read"] + row["bytes_written"]) / m["time_s"]
                row["rel_error"] = (row["predicted_time_s"] - m["time_s"]) / m["time_s"]
        out.append(row)
    return out


def from_point_rows(point_rows: list[dict]) -> list[dict]:
    """measure_point's dicts -> the fields twin_rows reads (SI names of the row schema)."""
    return [{"method": x["method"], "phase": x["phase"], "r": x.get("r"), "k": x.get("k"), "time_s": x["median_s"],
             "time_p20_s": x["p20_s"], "time_p80_s": x["p80_s"], "max_rel_error": x.get("check_rel_err"),
             "status": "ok"} for x in point_rows]


def groups(points: list[Point]) -> dict[tuple, list[Point]]:
    """Points sharing (model, B, S, l, dtype) share caches, dense and SDPA: measured together."""
    out: dict[tuple, list[Point]] = {}
    for p in points:
        out.setdefault((p.model, p.batch, p.seq_len, p.l, p.kv_dtype), []).append(p)
    return out


def refit(out_dir: Path) -> int:
    """A new calibration.yaml from the rows.csv and metadata.json already in out_dir (no GPU):
    for a changed model, or to see its held-out errors again."""
    from .calibrate import calibrate_with_validation

    rows_path, meta_path = out_dir / "rows.csv", out_dir / "metadata.json"
    if not rows_path.exists() or not meta_path.exists():
        raise UserError(f"--refit needs {rows_path} and {meta_path} from an earlier measure run")
    meta = json.loads(meta_path.read_text())
    rows = R.read_csv(rows_path)
    profile = meta.get("profile") or meta.get("gpu")
    units = meta.get("compute_units") or (get_profile(profile).compute_units if profile in builtin_profiles() else 132)
    copy_bw = meta["copy_bandwidth_bytes_per_s"]
    cal = calibrate_with_validation(rows, profile, copy_bw, {"commit": meta.get("commit"), "gpu": meta.get("gpu"),
                                                             "sweep": meta.get("sweep"), "refit_from": str(rows_path)},
                                    units)
    cal.save(out_dir / "calibration.yaml")
    print_summary(rows, cal, copy_bw)
    print(f"wrote {out_dir / 'calibration.yaml'}")
    return 0


def main(args) -> int:
    if getattr(args, "refit", False):
        return refit(Path(args.out))
    torch = _require_cuda()
    from ..measure import point as point_mod
    from ..measure import timing
    from .calibrate import calibrate_with_validation
    from .gpu import match_profile, nvml_snapshot

    sweep_name, points = load_sweep(args.sweep or ("quick" if args.quick else None))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows_path = out_dir / "rows.csv"

    gpu_name = torch.cuda.get_device_name(0)
    profile_name = match_profile(gpu_name)
    if profile_name:
        hw = get_profile(profile_name)
        print(f"GPU: {gpu_name} -> profile {profile_name}")
    else:
        hw = builtin_profiles()["h100-sxm"]
        profile_name = gpu_name
        print(f"GPU: {gpu_name}: no profile matches; using measured ceilings with the h100-sxm profile's other figures")
    nvml_before = nvml_snapshot()
    copy_bw = timing.copy_bandwidth_bytes_per_s()["bytes_per_s"]
    matmul = timing.matmul_flops_per_s()["flops_per_s"]
    print(f"ceilings: copy {copy_bw / 1e9:.0f} GB/s (read + write), bf16 matmul {matmul / 1e12:.0f} TFLOP/s")

    done_rows = R.read_csv(rows_path) if (args.resume and rows_path.exists()) else []
    done = {(r["model"], r["batch"], r["seq_len"], r["l"], r["kv_dtype"]) for r in done_rows}
    rows = list(done_rows)
    commit = git_commit(args.commit)
    command = "sparq-perf measure " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["measure"] else "sparq-perf measure"
    todo = {key: ps for key, ps in groups(points).items() if key not in done}
    failures = []

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as bar:
        task = bar.add_task("measuring", total=len(todo))
        for (model, batch, seq_len, l, kv_dtype), ps in todo.items():
            p = ps[0]
            bar.update(task, description=f"{model} B={batch} S={seq_len}")
            base = {"source": "measured", "device": profile_name, "model": model, "batch": batch, "seq_len": seq_len,
                    "n_heads": p.n_heads, "n_kv_heads": p.n_kv_heads, "d_head": p.d_head, "l": l,
                    "kv_dtype": kv_dtype, "git_commit": commit,
                    "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "command": command}
            free = torch.cuda.mem_get_info()[0]
            status = None
            if point_bytes(p) > MEMORY_HEADROOM * free:
                status = f"skipped: needs {point_bytes(p) / 1e9:.1f} GB, {free / 1e9:.1f} GB free"
            else:
                try:
                    measured = from_point_rows(point_mod.measure_point(
                        batch, seq_len, p.n_heads, p.n_kv_heads, p.d_head, sparq_settings=[(q.r, q.k) for q in ps],
                        l=l, dtype={"bf16": "bfloat16", "fp16": "float16"}[kv_dtype]))
                    rows.extend(twin_rows(p, hw, measured, base, copy_bw))
                except torch.cuda.OutOfMemoryError:
                    status = "skipped: out of memory"
                except RuntimeError as e:  # a kernel failed its check against the reference
                    status = f"failed check: {e}"
                    failures.append(status)
                torch.cuda.empty_cache()
            if status:
                rows.extend({**base, "method": "sparq", "phase": P.SPARQ_DECODE, "scope": "layer", "r": q.r, "k": q.k,
                             "status": status} for q in ps)
            R.write_csv(rows_path, rows)  # every finished point is kept, even if the run stops
            bar.advance(task)
    for f in failures:
        print(f, file=sys.stderr)

    nvml_after = nvml_snapshot()
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        pass
    from importlib.metadata import version

    versions["sparq_perf"] = version("sparq-perf")
    from ..kernels._common import device_sms

    units = device_sms() or hw.compute_units  # the waves of the calibration's serial term
    meta = {"gpu": gpu_name, "profile": profile_name, "sweep": sweep_name, "commit": commit, "command": command,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "versions": versions,
            "copy_bandwidth_bytes_per_s": copy_bw, "bf16_matmul_flops_per_s": matmul, "compute_units": units,
            "nvml_before": nvml_before, "nvml_after": nvml_after}
    (out_dir / "metadata.json").write_text(json.dumps(meta, indent=1, default=str))
    cal = calibrate_with_validation(rows, profile_name, copy_bw, {"commit": commit, "gpu": gpu_name, "sweep": sweep_name},
                                    units)
    cal.save(out_dir / "calibration.yaml")
    print_summary(rows, cal, copy_bw)
    print(f"wrote {rows_path}, {out_dir / 'metadata.json'}, {out_dir / 'calibration.yaml'}")
    return 0


def print_summary(rows, cal, copy_bw) -> None:
    ok = [r for r in rows if r["status"] == "ok" and r["time_s"]]
    print(f"{len(ok)} timed rows, {sum(1 for r in rows if r['status'] != 'ok')} skipped points")
    held = cal.info.get("held_out", {})
    print(f"held-out lengths {held.get('test_seq_len')}: |predicted - measured| / measured by phase:")
    for phase, e in held.get("errors", {}).items():
        print(f"  {phase:16s} n={e['n']:4d}  median {100 * e['median_abs_rel_error']:5.1f}%  p90 {100 * e['p90_abs_rel_error']:5.1f}%")
    for path, e in held.get("select_by_path", {}).items():
        unseen = "" if e["in_training"] else "  (no training row takes this path)"
        print(f"    select, {path:5s} n={e['n']:4d}  median {100 * e['median_abs_rel_error']:5.1f}%  "
              f"p90 {100 * e['p90_abs_rel_error']:5.1f}%{unseen}")
