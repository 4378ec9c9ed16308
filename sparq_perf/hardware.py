"""Hardware profiles: YAML files in hw_profiles/, loaded into frozen, validated dataclasses.

A profile keeps datasheet peaks apart from achievable fractions, in SI units, with a
source for every figure. Memory is a list of tiers, fastest first (an IPU has on-chip
SRAM and streaming memory; data that does not fit a tier spills to the next).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .config import check_keys, fraction, positive, read_yaml
from .errors import UserError, closest

KINDS = ("gpu", "ipu", "cpu")
REQUIRED_FLOP_DTYPES = ("fp32", "fp16", "bf16")
OPTIONAL_FLOP_DTYPES = ("tf32", "fp8", "int8", "int4")


@dataclass(frozen=True)
class MemoryTier:
    name: str
    capacity_bytes: float
    peak_bandwidth_bytes_per_s: float
    achievable_bandwidth_fraction: float

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Achievable bandwidth: peak times the achievable fraction."""
        return self.peak_bandwidth_bytes_per_s * self.achievable_bandwidth_fraction


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    kind: str
    memory_tiers: tuple[MemoryTier, ...]
    usable_memory_fraction: float
    peak_flops_per_s: dict  # dtype -> FLOP/s (dense, no sparsity)
    achievable_flops_fraction: float
    cache_bytes: float
    compute_units: int
    launch_overhead_s: float
    aliases: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict, compare=False)
    path: str = ""

    @property
    def capacity_bytes(self) -> float:
        return sum(t.capacity_bytes for t in self.memory_tiers)

    @property
    def usable_bytes(self) -> float:
        return self.capacity_bytes * self.usable_memory_fraction

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Achievable bandwidth of the main (largest) tier."""
        return max(self.memory_tiers, key=lambda t: t.capacity_bytes).bandwidth_bytes_per_s

    def flops_per_s(self, dtype: str) -> float:
        """Achievable FLOP/s for arithmetic in `dtype`."""
        if dtype in ("int4", "int8", "fp8") and dtype not in self.peak_flops_per_s:
            dtype = "bf16"  # dequantised to bf16 before the matmul
        return self.peak_flops_per_s[dtype] * self.achievable_flops_fraction


_TOP = {"name", "description", "kind", "memory_tiers", "usable_memory_fraction",
        "peak_flops_per_s", "achievable_flops_fraction", "cache_bytes", "compute_units",
        "launch_overhead_s", "sources"}
_TIER = {"name", "capacity_bytes", "peak_bandwidth_bytes_per_s", "achievable_bandwidth_fraction"}


def _figure_paths(data: dict) -> list[str]:
    """Every numeric field of a profile, as the dotted path its source is filed under."""
    paths = [k for k in ("usable_memory_fraction", "achievable_flops_fraction", "cache_bytes",
                         "compute_units", "launch_overhead_s")]
    paths += [f"peak_flops_per_s.{d}" for d in data["peak_flops_per_s"]]
    for t in data["memory_tiers"]:
        paths += [f"memory_tiers.{t['name']}.{k}" for k in sorted(_TIER - {"name"})]
    return paths


def parse_profile(data: dict, where: str) -> Hardware:
    check_keys(where, data, _TOP, {"aliases"})
    if data["kind"] not in KINDS:
        raise UserError(f"{where}: field kind must be one of {', '.join(KINDS)}, got {data['kind']!r}")
    tiers_data = data["memory_tiers"]
    if not isinstance(tiers_data, list) or not tiers_data:
        raise UserError(f"{where}: field memory_tiers must be a non-empty list")
    tiers = []
    for i, t in enumerate(tiers_data):
        tw = f"{where}: memory_tiers[{i}]"
        if not isinstance(t, dict):
            raise UserError(f"{tw} must be a mapping")
        check_keys(tw, t, _TIER)
        tiers.append(MemoryTier(
            name=str(t["name"]),
            capacity_bytes=positive(tw, "capacity_bytes", t["capacity_bytes"]),
            peak_bandwidth_bytes_per_s=positive(tw, "peak_bandwidth_bytes_per_s", t["peak_bandwidth_bytes_per_s"]),
            achievable_bandwidth_fraction=fraction(tw, "achievable_bandwidth_fraction", t["achievable_bandwidth_fraction"]),
        ))
    flops = data["peak_flops_per_s"]
    if not isinstance(flops, dict):
        raise UserError(f"{where}: field peak_flops_per_s must be a mapping of dtype to FLOP/s")
    check_keys(f"{where}: peak_flops_per_s", flops, set(REQUIRED_FLOP_DTYPES), set(OPTIONAL_FLOP_DTYPES))
    flops = {d: positive(where, f"peak_flops_per_s.{d}", v) for d, v in flops.items()}
    sources = data["sources"]
    if not isinstance(sources, dict):
        raise UserError(f"{where}: field sources must map each figure to where it comes from")
    unsourced = [p for p in _figure_paths(data) if not str(sources.get(p, "")).strip()]
    if unsourced:
        raise UserError(f"{where}: no source for {', '.join(unsourced)}")
    aliases = data.get("aliases", []) or []
    return Hardware(
        name=str(data["name"]),
        description=str(data["description"]),
        kind=data["kind"],
        memory_tiers=tuple(tiers),
        usable_memory_fraction=fraction(where, "usable_memory_fraction", data["usable_memory_fraction"]),
        peak_flops_per_s=flops,
        achievable_flops_fraction=fraction(where, "achievable_flops_fraction", data["achievable_flops_fraction"]),
        cache_bytes=positive(where, "cache_bytes", data["cache_bytes"]),
        compute_units=positive(where, "compute_units", data["compute_units"], integer=True),
        launch_overhead_s=positive(where, "launch_overhead_s", data["launch_overhead_s"]),
        aliases=tuple(str(a) for a in aliases),
        sources=dict(sources),
        path=where,
    )


def load_profile_file(path: Path | str) -> Hardware:
    return parse_profile(read_yaml(path), str(path))


@lru_cache(maxsize=None)
def builtin_profiles() -> dict[str, Hardware]:
    """All profiles shipped in sparq_perf.hw_profiles, by name."""
    out = {}
    for entry in sorted(resources.files("sparq_perf.hw_profiles").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            hw = parse_profile(read_yaml(entry.name, entry.read_text()), f"hw_profiles/{entry.name}")
            out[hw.name] = hw
    return out


def _aliases() -> dict[str, str]:
    return {a: hw.name for hw in builtin_profiles().values() for a in hw.aliases}


def known_names() -> list[str]:
    return sorted(builtin_profiles()) + sorted(_aliases())


def get_profile(name_or_path: str) -> Hardware:
    """A profile by name, alias or YAML path."""
    profiles = builtin_profiles()
    if name_or_path in profiles:
        return profiles[name_or_path]
    aliases = _aliases()
    if name_or_path in aliases:
        return profiles[aliases[name_or_path]]
    if name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path:
        return load_profile_file(name_or_path)
    raise UserError(f"unknown GPU/device {name_or_path!r}{closest(name_or_path, known_names())}; "
                    f"known: {', '.join(known_names())}")
