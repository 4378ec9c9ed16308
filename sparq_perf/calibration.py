"""Calibration: efficiency terms fitted from measurements, read by `predict --calibration`.

Per phase, time = overhead_s + bytes / (bandwidth_fraction * copy bandwidth)
+ serial_s_per_item * serial work, the last for phases with work done by one program per
row (the selection's threshold and pick: ceil(rows / compute_units) * (sample + slots
per row)), + s_per_program_wave * the programs of its split grids over the compute units,
for phases whose programs each pay a fixed cost (the attend: q, statistics, the index load
before the gather). The bandwidth term scales with a device's copy bandwidth; the overhead,
serial and program terms (launches, latency) do not, so a calibration taken on one GPU can
predict another given only that GPU's measured copy bandwidth.
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
    serial_s_per_item: float = 0.0
    s_per_program_wave: float = 0.0


@dataclass(frozen=True)
class Calibration:
    device: str
    copy_bandwidth_bytes_per_s: float
    phases: dict  # phase name -> PhaseFit
    info: dict = field(default_factory=dict, compare=False)  # provenance, fit quality
    compute_units: int = 132  # of the device measured: the waves of the serial term

    def to_dict(self) -> dict:
        return {
            "device": self.device,
            "copy_bandwidth_bytes_per_s": float(self.copy_bandwidth_bytes_per_s),
            "compute_units": int(self.compute_units),
            "phases": {p: {"bandwidth_fraction": float(f.bandwidth_fraction), "overhead_s": float(f.overhead_s),
                           **({"serial_s_per_item": float(f.serial_s_per_item)} if f.serial_s_per_item else {}),
                           **({"s_per_program_wave": float(f.s_per_program_wave)} if f.s_per_program_wave else {})}
                       for p, f in self.phases.items()},
            "info": self.info,
        }

    def save(self, path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def parse_calibration(data: dict, where: str) -> Calibration:
    check_keys(where, data, {"device", "copy_bandwidth_bytes_per_s", "phases"}, {"info", "compute_units"})
    phases = {}
    for name, fit in (data["phases"] or {}).items():
        fw = f"{where}: phases.{name}"
        if not isinstance(fit, dict):
            raise UserError(f"{fw} must be a mapping")
        check_keys(fw, fit, {"bandwidth_fraction", "overhead_s"}, {"serial_s_per_item", "s_per_program_wave"})
        for key in ("overhead_s", "serial_s_per_item", "s_per_program_wave"):
            v = fit.get(key, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UserError(f"{fw}: field {key} must be a number >= 0, got {v!r}")
        phases[str(name)] = PhaseFit(positive(fw, "bandwidth_fraction", fit["bandwidth_fraction"]), float(fit["overhead_s"]),
                                     float(fit.get("serial_s_per_item", 0.0)), float(fit.get("s_per_program_wave", 0.0)))
    units = int(positive(where, "compute_units", data.get("compute_units", 132)))
    return Calibration(str(data["device"]), positive(where, "copy_bandwidth_bytes_per_s", data["copy_bandwidth_bytes_per_s"]),
                       phases, dict(data.get("info") or {}), units)


def load_calibration(path) -> Calibration:
    return parse_calibration(read_yaml(path), str(path))
