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
    # split kernels whose programs each pay a fixed cost (loads of q and statistics, a
    # dependent index-then-gather round trip): their grids, see SplitGrid
    grids: tuple = ()

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
    reads, writes, flops, launches, rows, items, grids = {}, {}, 0.0, 0.0, 0.0, 0.0, ()
    for c in costs:
        grids = grids + c.grids
        reads.update({f"{c.name}.{k}": v for k, v in c.reads.items()})
        writes.update({f"{c.name}.{k}": v for k, v in c.writes.items()})
        flops = flops + c.flops
        launches = launches + c.launches
        rows = np.maximum(rows, c.serial_rows)  # one phase has serial work at most
        items = items + c.serial_items
    return PhaseCost(name, reads, writes, flops, launches, rows, items, grids)


def serial_waves(cost: PhaseCost, compute_units: int):
    """Items done one after another on a compute unit: ceil(rows / units) * items per row."""
    return np.ceil(np.asarray(cost.serial_rows, np.float64) / compute_units) * cost.serial_items


def splits(rows, length, block, waves, compute_units, whole=False, max_blocks=np.inf):
    """Splits of `length` so that rows * splits programs fill the compute units about `waves`
    times (the last wave may be part-filled), or with `whole` at most `waves` times (no wave
    left part-filled past them: the dense kernel's rule); more where a split would hold more
    than `max_blocks` blocks; at least one, at most one per block (the split kernels' grid rule)."""
    rows = np.asarray(rows, np.float64)
    slots = np.asarray(waves, np.float64) * compute_units
    blocks = np.ceil(np.asarray(length, np.float64) / block)
    want = np.maximum(1.0, np.floor(slots / rows if whole else (slots + rows - 1) / rows))
    want = np.maximum(want, np.ceil(blocks / np.asarray(max_blocks, np.float64)))
    return np.maximum(1.0, np.minimum(want, blocks))


@dataclass(frozen=True)
class SplitGrid:
    """A split kernel's grid (rows, splits of `length` in blocks): `waves` over the compute
    units, or `waves_few` where `few` is set or the rows are fewer than the units (infinite
    waves: a program per block), and there at most `max_blocks_few` blocks a program. Its
    programs count `weight` times each (programs doing that many times the work of one)."""

    rows: object
    length: object
    block: int
    waves: float
    waves_few: float
    few: object = False
    weight: object = 1.0
    max_blocks_few: float = np.inf

    def programs(self, compute_units: int):
        waves = waves_for(self.rows, compute_units, self.waves, self.waves_few, self.few)
        cap = waves_for(self.rows, compute_units, np.inf, self.max_blocks_few, self.few)
        n = np.asarray(self.rows, np.float64) * splits(self.rows, self.length, self.block, waves, compute_units,
                                                       max_blocks=cap)
        return n * np.asarray(self.weight, np.float64)


def waves_for(rows, compute_units, waves, waves_few, few=False):
    """`waves_few` (fewer, longer programs) where `few` or the rows are fewer than the units."""
    return np.where(np.asarray(few) | (np.asarray(rows) < compute_units), waves_few, waves)


def program_waves(cost: PhaseCost, compute_units: int):
    """The programs of the cost's split grids, in waves over the compute units."""
    return sum((g.programs(compute_units) for g in cost.grids), np.float64(0.0)) / compute_units
