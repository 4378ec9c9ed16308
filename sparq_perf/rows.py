"""One row schema for predictions and measurements.

Every row describes one operation (a phase name from `phases`, or a whole step) at one
workload point on one device. A measured row carries the prediction for the same point
in `predicted_time_s`, so the report can put the two side by side. Units are SI and in
the column name.
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Iterable, Mapping

# Column -> meaning. Order is the CSV column order.
COLUMNS: dict[str, str] = {
    # what
    "source": "'predicted' or 'measured'",
    "method": "attention method: dense, sparq, ...",
    "phase": "operation name (sparq_perf.phases) or a step name such as sparq_decode",
    "scope": "'layer' (one layer, whole batch), 'step' (whole decode step) or 'once'",
    "count": "how many times the operation runs per decode step",
    # where
    "device": "hardware profile name (or the GPU name when none matches)",
    # workload
    "model": "model architecture name",
    "batch": "sequences decoded together",
    "seq_len": "current KV length S (positions)",
    "n_heads": "query heads",
    "n_kv_heads": "key/value heads",
    "d_head": "head dimension d_h",
    "r": "query components used for approximate scores (SparQ)",
    "k": "positions fetched (SparQ and other sparse methods)",
    "l": "local window inside k",
    "kv_dtype": "KV cache dtype",
    "weight_dtype": "weight dtype",
    # cost
    "bytes_read": "bytes read from memory",
    "bytes_written": "bytes written to memory",
    "flops": "floating-point operations",
    "intensity_flop_per_byte": "flops / (bytes_read + bytes_written)",
    "memory_time_s": "predicted time bound by memory traffic",
    "compute_time_s": "predicted time bound by arithmetic",
    "overhead_time_s": "predicted fixed time (launches, latency-bound selection)",
    "bound": "'memory', 'compute' or 'overhead': the term that wins",
    "time_s": "predicted or measured (median) time",
    # measurement
    "time_p20_s": "20th percentile of measured times",
    "time_p80_s": "80th percentile of measured times",
    "achieved_bytes_per_s": "(bytes_read + bytes_written) / time_s",
    "predicted_time_s": "the prediction for this row's point (measured rows)",
    "rel_error": "(predicted_time_s - time_s) / time_s (measured rows)",
    "max_rel_error": "output error vs the float64 reference (measured rows)",
    "status": "'ok', or why a point was skipped",
    # provenance
    "git_commit": "commit of the code that made the row",
    "date": "ISO 8601 date and time of the run",
    "command": "command line that reproduces the row",
}

FLOAT_COLUMNS = {
    "bytes_read", "bytes_written", "flops", "intensity_flop_per_byte", "memory_time_s",
    "compute_time_s", "overhead_time_s", "time_s", "time_p20_s", "time_p80_s",
    "achieved_bytes_per_s", "predicted_time_s", "rel_error", "max_rel_error", "count",
}
INT_COLUMNS = {"batch", "seq_len", "n_heads", "n_kv_heads", "d_head", "r", "k", "l"}


def normalise(row: Mapping) -> dict:
    """A row with every column present (missing ones None); rejects unknown columns."""
    unknown = set(row) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown row columns: {sorted(unknown)}")
    return {c: row.get(c) for c in COLUMNS}


def _plain(value):
    """numpy scalars -> Python scalars, NaN -> None (JSON has no NaN)."""
    if value is None:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def to_json(rows: Iterable[Mapping]) -> str:
    return json.dumps([{c: _plain(v) for c, v in normalise(r).items()} for r in rows], indent=1)


def to_csv(rows: Iterable[Mapping]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: ("" if v is None else _plain(v)) for c, v in normalise(r).items()})
    return buf.getvalue()


def _parse(column: str, text: str):
    if text == "":
        return None
    if column in INT_COLUMNS:
        return int(float(text))
    if column in FLOAT_COLUMNS:
        return float(text)
    return text


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{c: _parse(c, row.get(c, "")) for c in COLUMNS} for row in csv.DictReader(f)]


def write_csv(path, rows: Iterable[Mapping]) -> None:
    with open(path, "w", newline="") as f:
        f.write(to_csv(rows))
