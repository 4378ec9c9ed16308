"""Time from cost: time = max(memory time, compute time) + overhead, with each part kept.

Memory time spreads the bytes over the device's memory tiers in proportion to where the
working set resides (fastest tier first); a calibration replaces a phase's bandwidth by its
fitted fraction of the measured copy bandwidth and its overhead by the fitted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import Calibration
from .cost.base import PhaseCost, program_waves, serial_waves
from .hardware import Hardware


@dataclass(frozen=True)
class Estimate:
    memory_time_s: object
    compute_time_s: object
    overhead_time_s: object

    @property
    def time_s(self):
        return np.maximum(self.memory_time_s, self.compute_time_s) + self.overhead_time_s

    @property
    def bound(self):
        """'memory', 'compute' or 'overhead': the largest of the three terms."""
        terms = np.stack(np.broadcast_arrays(self.memory_time_s, self.compute_time_s, self.overhead_time_s))
        names = np.array(["memory", "compute", "overhead"])
        return names[np.argmax(terms, axis=0)]


def seconds_per_byte(hw: Hardware, resident_bytes=None):
    """Mean seconds per byte moved, with the working set filling tiers fastest first.

    Without a resident size every byte is charged at the largest tier's bandwidth.
    """
    tiers = hw.memory_tiers
    if resident_bytes is None or len(tiers) == 1:
        return 1.0 / hw.bandwidth_bytes_per_s
    R = np.maximum(np.asarray(resident_bytes, np.float64), 1.0)
    out, before = 0.0, 0.0
    for i, t in enumerate(tiers):
        last = i == len(tiers) - 1
        inside = R - before if last else np.clip(R - before, 0.0, t.capacity_bytes)
        out = out + np.maximum(inside, 0.0) / R / t.bandwidth_bytes_per_s
        before += t.capacity_bytes
    return out


def estimate(cost: PhaseCost, hw: Hardware, *, compute_dtype: str = "bf16", resident_bytes=None,
             calibration: Calibration | None = None, copy_bandwidth_bytes_per_s: float | None = None) -> Estimate:
    fit = calibration.phases.get(cost.name) if calibration else None
    if fit is not None:
        copy_bw = copy_bandwidth_bytes_per_s or calibration.copy_bandwidth_bytes_per_s
        memory = cost.bytes / (fit.bandwidth_fraction * copy_bw)
        overhead = (fit.overhead_s + fit.serial_s_per_item * serial_waves(cost, hw.compute_units)
                    + fit.s_per_program_wave * program_waves(cost, hw.compute_units) + 0.0 * memory)
    else:
        scale = 1.0
        if copy_bandwidth_bytes_per_s:  # a measured copy bandwidth replaces the profile's achievable one
            scale = hw.bandwidth_bytes_per_s / copy_bandwidth_bytes_per_s
        memory = cost.bytes * seconds_per_byte(hw, resident_bytes) * scale
        overhead = cost.launches * hw.launch_overhead_s + 0.0 * memory
    compute = np.asarray(cost.flops, np.float64) / hw.flops_per_s(compute_dtype)
    return Estimate(memory, compute, overhead)
