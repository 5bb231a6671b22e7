"""Errors raised by `schemas`: all are `ValueError`s, so callers can map them to HTTP 400/415."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class SchemaError(ValueError):
    """Base class: input that does not satisfy a schema of ours."""


class InvalidCloudEvent(SchemaError):
    """A message that claims to be a CloudEvent but is not a valid one (HTTP 400, or dead-letter).

    `reason` says what is wrong; `field` names the attribute (or header, see `location`) at fault.
    """

    def __init__(
        self,
        reason: str,
        field: str | None = None,
        *,
        location: str = "attribute",
        member: int | None = None,
    ) -> None:
        self.reason = reason
        self.field = field
        self.location = location
        self.member = member
        prefix = "invalid CloudEvent"
        if member is not None:
            prefix += f" (batch member {member})"
        where = f"{location} {field!r}: " if field is not None else ""
        super().__init__(f"{prefix}: {where}{reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_invalid, (self.reason, self.field, self.location, self.member))

    def in_member(self, member: int) -> InvalidCloudEvent:
        """The same error, attributed to a member of a batch."""
        return InvalidCloudEvent(self.reason, self.field, location=self.location, member=member)


class UnsupportedFormat(SchemaError):
    """A structured/batched message in an event format we do not support (HTTP 415)."""

    def __init__(self, content_type: str, reason: str | None = None) -> None:
        self.content_type = content_type
        self.reason = reason
        super().__init__(reason or f"unsupported CloudEvents format {content_type!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (UnsupportedFormat, (self.content_type, self.reason))


def _rebuild_invalid(reason: str, field: str | None, location: str, member: int | None) -> InvalidCloudEvent:
    return InvalidCloudEvent(reason, field, location=location, member=member)


@dataclass(frozen=True, slots=True)
class SpecProblem:
    """One problem in a Trigger spec file.

    Printed as `triggers.yaml#2 spec.delivery.retry.attempts: must be >= 0`. `document` is the 1-based
    number of the YAML document in `file` (None when the problem is about the file as a whole, like a
    missing file); `path` is the field path with camelCase names and list indices
    (`spec.source.kafka.topics[0]`), empty when the problem is about the whole document.
    """

    file: str
    document: int | None
    path: str
    message: str

    @property
    def place(self) -> str:
        """`file#document`, or just `file`."""
        return self.file if self.document is None else f"{self.file}#{self.document}"

    def __str__(self) -> str:
        where = f"{self.place} {self.path}" if self.path else self.place
        return f"{where}: {self.message}"


class TriggerSpecError(SchemaError):
    """Trigger specs that do not load; `problems` lists every problem found, in file and document order."""

    def __init__(self, problems: Iterable[SpecProblem]) -> None:
        self.problems: list[SpecProblem] = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in trigger specs"
        super().__init__("\n".join([f"{head}:", *(f"  {p}" for p in self.problems)]))

    def __reduce__(self) -> tuple[type[TriggerSpecError], tuple[list[SpecProblem]]]:
        return (TriggerSpecError, (self.problems,))
