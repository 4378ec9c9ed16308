"""Sweep definitions: YAML -> the list of workload points to measure."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources

from ..config import check_keys, read_yaml
from ..errors import UserError
from ..models import get_model
from ..predict import Settings, resolve
from ..units import parse_count, parse_fraction

BUILTIN = ("default", "quick")


@dataclass(frozen=True)
class Point:
    model: str
    n_heads: int
    n_kv_heads: int
    d_head: int
    batch: int
    seq_len: int
    r: int
    k: int
    l: int
    kv_dtype: str
    setting: str  # e.g. 'c=1/8' or 'r=32,k=128'

    def key(self) -> tuple:
        """Identity of a point in measured rows (for --resume)."""
        return (self.model, self.batch, self.seq_len, self.r, self.k, self.l, self.kv_dtype)


def load_sweep(name_or_path: str | None) -> tuple[str, list[Point]]:
    if name_or_path is None or name_or_path in BUILTIN:
        name = name_or_path or "default"
        entry = resources.files("sparq_perf.sweeps").joinpath(f"{name}.yaml")
        return name, expand(read_yaml(f"sweeps/{name}.yaml", entry.read_text()), f"sweeps/{name}.yaml")
    data = read_yaml(name_or_path)
    return str(data.get("name", name_or_path)), expand(data, name_or_path)


def expand(data: dict, where: str) -> list[Point]:
    check_keys(where, data, {"models", "batch", "seq_len", "sparq"}, {"name", "l", "kv_dtype"})
    from ..hardware import get_profile

    hw = get_profile("h100-sxm")  # only for resolve()'s checks; no device figures are used
    points, seen = [], set()
    for model_name, batch, seq, setting in itertools.product(data["models"], data["batch"], data["seq_len"], data["sparq"]):
        m = get_model(str(model_name))
        if not isinstance(setting, dict):
            raise UserError(f"{where}: each sparq entry is a mapping such as {{compression: 1/8}} or {{r: 32, k: 128}}")
        check_keys(f"{where}: sparq entry", setting, set(), {"compression", "r", "k"})
        S = parse_count(seq, f"{where}: seq_len")
        comp = parse_fraction(str(setting.get("compression", "1/8")), f"{where}: compression")
        r, k, l = resolve(Settings(m, hw, batch=int(batch), seq_len=S, compression=comp, r=setting.get("r"),
                                   k=setting.get("k"), l=int(data.get("l", 0))))
        label = f"c={setting['compression']}" if "compression" in setting else ",".join(f"{a}={setting[a]}" for a in ("r", "k") if a in setting)
        p = Point(m.name, m.n_heads, m.n_kv_heads, m.d_head, int(batch), S, r, k, l, str(data.get("kv_dtype", "bf16")), label)
        if p.key() not in seen:
            seen.add(p.key())
            points.append(p)
    return points
