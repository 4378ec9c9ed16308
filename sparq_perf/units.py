"""Parsing of user quantities and formatting for people. Data stays in SI base units."""
from __future__ import annotations

import re

from .errors import UserError

DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
_SUFFIX = {"": 1, "k": 1024, "m": 1024**2}


def dtype_bytes(name: str) -> float:
    try:
        return DTYPE_BYTES[name]
    except KeyError:
        raise UserError(f"unknown dtype {name!r}; known: {', '.join(DTYPE_BYTES)}") from None


def parse_count(text: str | int, what: str = "--seq") -> int:
    """'4096', '128k' (x1024), '1M' (x1024^2), '1.5k' -> positions."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise UserError(f"{what}: cannot read {text!r}; give a whole number, optionally with k (x1024) or M (x1024^2), e.g. 32k")
    value = float(m.group(1)) * _SUFFIX[m.group(2).lower()]
    if value != int(value):
        raise UserError(f"{what}: {text!r} is not a whole number of positions ({value:g})")
    return int(value)


def parse_fraction(text: str, what: str) -> float:
    """'1/8', '0.125' -> 0.125."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{what}: cannot read {text!r}; give a fraction such as 1/8 or 0.125") from None
    if not 0 < value <= 1:
        raise UserError(f"{what}: {text!r} must be in (0, 1]")
    return value


def fmt_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} B"


def fmt_time(t: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(t) >= scale:
            return f"{t / scale:.3g} {unit}"
    return f"{t / 1e-9:.3g} ns"


def fmt_flops(f: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if abs(f) >= scale:
            return f"{f / scale:.3g} {unit}"
    return f"{f:.3g} FLOP"
