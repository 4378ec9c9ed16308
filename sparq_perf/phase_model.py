"""Predicted time of each attention phase of one layer, and of the whole attention step:
the twin of a measured kernel timing (same names, same bytes)."""
from __future__ import annotations

from . import phases as P
from .calibration import Calibration
from .cost.attention import SparqImpl, attention_costs
from .cost.base import combine
from .estimate import Estimate, estimate
from .hardware import Hardware
from .workload import Workload

STEP_PHASES = {P.DENSE_DECODE: P.DENSE_PHASES, P.SPARQ_DECODE: P.SPARQ_PHASES}
# Measured (method, phase) -> the model's method for its predicted twin. The append kernel
# always writes both K layouts and v_bar, so its twin is SparQ's append; torch.topk is timed
# on SparQ's scores, so its twin is SparQ's selection.
TWIN_METHOD = {"sdpa": "dense", "torch_topk": "sparq"}


def model_method(method: str, phase: str) -> str:
    """The model's method for a measured row's (method, phase)."""
    return "sparq" if phase == P.APPEND else TWIN_METHOD.get(method, method)


def predict_phases(hw: Hardware, w: Workload, method: str, *, calibration: Calibration | None = None,
                   copy_bandwidth_bytes_per_s: float | None = None, impl: SparqImpl | None = None) -> dict:
    """name -> (PhaseCost, Estimate) for each phase of `method` and its whole step (append excluded).

    A calibrated whole step uses its own fit when the calibration has one (the step runs as
    one CUDA graph, so its overhead is not the sum of the phases' launch overheads)."""
    costs = attention_costs(method, w, impl if method == "sparq" else None)

    def est(cost):
        return estimate(cost, hw, calibration=calibration, copy_bandwidth_bytes_per_s=copy_bandwidth_bytes_per_s)

    out = {name: (cost, est(cost)) for name, cost in costs.items()}
    step = P.decode_name(method)
    parts = [out[n] for n in STEP_PHASES[step]]
    step_cost = combine(step, [c for c, _ in parts])
    if calibration is not None and step in calibration.phases:
        out[step] = (step_cost, est(step_cost))
    else:
        out[step] = (step_cost, Estimate(sum(e.memory_time_s for _, e in parts), sum(e.compute_time_s for _, e in parts),
                                         sum(e.overhead_time_s for _, e in parts)))
    return out
