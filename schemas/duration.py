"""Durations as Kubernetes users write them (`200ms`, `30s`, `5m`, `1h30m`), held as float seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
DURATION_PATTERN = r"^(0|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h|d))+)$"


def parse_duration(text: str) -> float:
    """Parse a Go-style duration string into seconds; raise ValueError naming the bad text."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, like 200ms, 30s, 5m or 1h30m")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact string for a duration, for status and `validate` output."""
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if abs(seconds * 1000 - ms) > 1e-6:
        return f"{seconds:g}s"
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _coerce(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a duration is a string like 30s, not a boolean")
    if isinstance(value, int | float):
        raise ValueError(f"a duration needs a unit: write {value}s or {value}ms")
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"a duration is a string like 30s, got {type(value).__name__}")


Duration = Annotated[
    float,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
"""A duration field: a string on the wire, float seconds in Python."""
