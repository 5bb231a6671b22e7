"""Durations as Kubernetes users write them (`200ms`, `30s`, `5m`, `1h30m`), held as float seconds."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d)")
DURATION_PATTERN = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+)$"
DURATION_MAX_LENGTH = 64
"""Longer duration strings are refused (the CRD says so too, which also bounds its CEL rules' cost)."""

MAX_DURATION = 9_223_372_036.854775807
"""Go's longest duration (about 292 years, 2562047h): anything longer is a typo, never a setting."""


def parse_duration(text: str) -> float:
    """Parse a Go-style duration string into seconds; raise ValueError naming the bad text."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    if s == "0":
        return 0.0
    if len(s) > DURATION_MAX_LENGTH:
        raise ValueError(f"invalid duration {_short(text)}: longer than {DURATION_MAX_LENGTH} characters")
    odd = next((c for c in s if c.isdigit() and c not in "0123456789"), None)
    if odd is not None:
        raise ValueError(f"invalid duration {text!r}: {odd!r} is not an ASCII digit (write 0-9)")
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit, like 200ms, 30s, 5m or 1h30m")
    if total > MAX_DURATION:
        raise ValueError(f"invalid duration {_short(text)}: out of range (at most 2562047h, about 292 years)")
    return total


def _short(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:37] + "...")


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


def _cel_at_most(seconds: float) -> str:
    """A CEL rule (Kubernetes CRD validation) for `duration <= seconds`. CEL's duration() reads Go durations,
    which have no `d` unit: a leading `<n>d` part is counted apart."""
    go = format_duration(seconds)
    days = (f"double(self.split('d')[0]) * 86400.0 + (self.split('d')[1] == '' ? 0.0 : "
            f"double(duration(self.split('d')[1]).getMilliseconds()) / 1000.0) <= {float(seconds)!r}")
    if go.endswith("ms"):
        go = f"{round(seconds * 1000)}ms"
    return f"self == '0' || (self.contains('d') ? {days} : duration(self) <= duration('{go}'))"


def _bounded_schema(maximum: float, *, positive: bool = False) -> dict[str, Any]:
    """The CRD schema of a bounded duration: the pattern, a length limit and CEL rules for the bounds."""
    rules: list[dict[str, str]] = [
        {"rule": _cel_at_most(maximum), "message": f"must be <= {format_duration(maximum)}"},
    ]
    if positive:
        rules.append({"rule": "self.matches('[1-9]')", "message": "must be > 0s"})
    return {"type": "string", "pattern": DURATION_PATTERN, "maxLength": DURATION_MAX_LENGTH,
            "x-kubernetes-validations": rules}


TIMEOUT_MAX = 3600.0
"""delivery.timeout: up to 1 h (a function call longer than that is a job, not an event)."""
RETRY_DELAY_MAX = 86400.0
"""retry.delay and retry.maxDelay (and other waits): up to 1 day."""
LEASE_MAX = 3600.0
"""Leases (the cron scheduler's leaseDuration): up to 1 h."""

_SERIALIZE = PlainSerializer(format_duration, return_type=str)

Timeout = Annotated[float, BeforeValidator(_coerce), Field(gt=0, le=TIMEOUT_MAX), _SERIALIZE,
                    WithJsonSchema(_bounded_schema(TIMEOUT_MAX, positive=True))]
"""A positive duration of at most 1 h (delivery.timeout, cron jitter)."""

ShortDuration = Annotated[float, BeforeValidator(_coerce), Field(ge=0, le=TIMEOUT_MAX), _SERIALIZE,
                          WithJsonSchema(_bounded_schema(TIMEOUT_MAX))]
"""A duration of at most 1 h, zero allowed (cron jitter)."""

Lease = Annotated[float, BeforeValidator(_coerce), Field(gt=0, le=LEASE_MAX), _SERIALIZE,
                  WithJsonSchema(_bounded_schema(LEASE_MAX, positive=True))]
"""A positive lease of at most 1 h."""

Delay = Annotated[float, BeforeValidator(_coerce), Field(ge=0, le=RETRY_DELAY_MAX), _SERIALIZE,
                  WithJsonSchema(_bounded_schema(RETRY_DELAY_MAX))]
"""A wait of at most 1 day (retry delays, a cron starting deadline)."""

PositiveDelay = Annotated[float, BeforeValidator(_coerce), Field(gt=0, le=RETRY_DELAY_MAX), _SERIALIZE,
                          WithJsonSchema(_bounded_schema(RETRY_DELAY_MAX, positive=True))]
"""A positive wait of at most 1 day (JetStream ackWait)."""
