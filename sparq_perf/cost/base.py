"""The cost of one operation: named byte terms and FLOPs, numpy-broadcastable."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PhaseCost:
    """Bytes and FLOPs of one operation (one layer, whole batch, one decode step).

    `reads` and `writes` name each byte term after the algorithm step it pays for, so a
    reader can see where the bytes go; the totals are their sums. Values are floats or
    numpy arrays that broadcast together.
    """

    name: str
    reads: dict = field(default_factory=dict)
    writes: dict = field(default_factory=dict)
    flops: object = 0.0
    launches: float = 1.0
    # work of programs that each own one row (a selection's threshold and pick): serial_rows
    # such rows of serial_items items each; rows beyond the compute units wait for a later wave
    serial_rows: object = 0.0
    serial_items: object = 0.0

    @property
    def bytes_read(self):
        return sum(self.reads.values(), np.float64(0.0))

    @property
    def bytes_written(self):
        return sum(self.writes.values(), np.float64(0.0))

    @property
    def bytes(self):
        return self.bytes_read + self.bytes_written

    @property
    def intensity_flop_per_byte(self):
        return np.asarray(self.flops) / np.maximum(self.bytes, 1e-300)


def combine(name: str, costs) -> PhaseCost:
    """One cost for several operations run back to back (their terms prefixed by phase)."""
    reads, writes, flops, launches, rows, items = {}, {}, 0.0, 0.0, 0.0, 0.0
    for c in costs:
        reads.update({f"{c.name}.{k}": v for k, v in c.reads.items()})
        writes.update({f"{c.name}.{k}": v for k, v in c.writes.items()})
        flops = flops + c.flops
        launches = launches + c.launches
        rows = np.maximum(rows, c.serial_rows)  # one phase has serial work at most
        items = items + c.serial_items
    return PhaseCost(name, reads, writes, flops, launches, rows, items)


def serial_waves(cost: PhaseCost, compute_units: int):
    """Items done one after another on a compute unit: ceil(rows / units) * items per row."""
    return np.ceil(np.asarray(cost.serial_rows, np.float64) / compute_units) * cost.serial_items
