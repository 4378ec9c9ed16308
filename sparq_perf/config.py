"""Loading YAML into validated frozen dataclasses: shared by hardware profiles and models."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


def read_yaml(path: Path | str, text: str | None = None) -> dict:
    """Parse a YAML mapping; any problem is a UserError naming the file."""
    try:
        data = yaml.safe_load(text if text is not None else Path(path).read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        line = f" line {e.problem_mark.line + 1}" if getattr(e, "problem_mark", None) else ""
        raise UserError(f"{path}:{line} not valid YAML") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def check_keys(where: str, data: dict, required: set[str], optional: set[str] = frozenset()) -> None:
    unknown = set(data) - required - set(optional)
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    missing = required - set(data)
    if missing:
        raise UserError(f"{where}: missing field(s) {', '.join(sorted(missing))}")


def positive(where: str, field: str, value: Any, integer: bool = False) -> float:
    """A positive number (int when asked), else a UserError naming file and field."""
    ok_type = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise UserError(f"{where}: field {field} must be {kind}, got {value!r}")
    return value if integer else float(value)


def fraction(where: str, field: str, value: Any) -> float:
    value = positive(where, field, value)
    if value > 1:
        raise UserError(f"{where}: field {field} must be in (0, 1], got {value!r}")
    return value


def frozen_replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
