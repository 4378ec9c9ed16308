"""Calibration: efficiency terms fitted from measurements, read by `predict --calibration`.

Per phase, time = overhead_s + bytes / (bandwidth_fraction * copy bandwidth). The
bandwidth term scales with a device's copy bandwidth; the overhead (launches,
latency-bound selection) does not, so a calibration taken on one GPU can predict another
given only that GPU's measured copy bandwidth.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .config import check_keys, positive, read_yaml
from .errors import UserError


@dataclass(frozen=True)
class PhaseFit:
    bandwidth_fraction: float
    overhead_s: float


@dataclass(frozen=True)
class Calibration:
    device: str
    copy_bandwidth_bytes_per_s: float
    phases: dict  # phase name -> PhaseFit
    info: dict = field(default_factory=dict, compare=False)  # provenance, fit quality

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "copy_bandwidth_bytes_per_s": float(self.copy_bandwidth_bytes_per_s),
            "phases": {p: {"bandwidth_fraction": float(f.bandwidth_fraction), "overhead_s": float(f.overhead_s)}
                       for p, f in self.phases.items()},
            "info": self.info,
        }

    def save(self, path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_calibration(data: dict, where: str) -> Calibration:
    check_keys(where, data, {"device", "copy_bandwidth_bytes_per_s", "phases"}, {"info"})
    phases = {}
    for name, fit in (data["phases"] or {}).items():
        fw = f"{where}: phases.{name}"
        if not isinstance(fit, dict):
            raise UserError(f"{fw} must be a mapping")
        check_keys(fw, fit, {"bandwidth_fraction", "overhead_s"})
        overhead = fit["overhead_s"]
        if isinstance(overhead, bool) or not isinstance(overhead, (int, float)) or overhead < 0:
            raise UserError(f"{fw}: field overhead_s must be a number >= 0, got {overhead!r}")
        phases[str(name)] = PhaseFit(positive(fw, "bandwidth_fraction", fit["bandwidth_fraction"]), float(overhead))
    return Calibration(str(data["device"]), positive(where, "copy_bandwidth_bytes_per_s", data["copy_bandwidth_bytes_per_s"]),
                       phases, dict(data.get("info") or {}))


def load_calibration(path) -> Calibration:
    return parse_calibration(read_yaml(path), str(path))
