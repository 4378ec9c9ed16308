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
    reads, writes, flops, launches = {}, {}, 0.0, 0.0
    for c in costs:
        reads.update({f"{c.name}.{k}": v for k, v in c.reads.items()})
        writes.update({f"{c.name}.{k}": v for k, v in c.writes.items()})
        flops = flops + c.flops
        launches = launches + c.launches
    return PhaseCost(name, reads, writes, flops, launches)
