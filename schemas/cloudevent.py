"""The CloudEvent as eventbus carries it: attributes plus the data bytes, never re-encoded in transit."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

AttributeValue = str | int | bool
"""Canonical CloudEvents attribute types we keep: String-like values as str, Integer as int, Boolean as bool."""

REQUIRED = ("id", "source", "specversion", "type")
KNOWN = frozenset({*REQUIRED, "datacontenttype", "dataschema", "subject", "time"})


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvent: context attributes (extensions included, `data` excluded) and the data as bytes.

    `data` is exactly the bytes a binary-mode message would carry as its body, so forwarding never
    decodes and re-encodes them. `None` means the event has no data (distinct from empty bytes only
    on bindings that can tell them apart).
    """

    attributes: Mapping[str, AttributeValue]
    data: bytes | None = None
    # Set when the event came from a JSON-format message whose `data` was JSON: the original JSON
    # text of `data`, so structured re-encoding can embed it verbatim.
    json_data: bool = field(default=False, compare=False)

    @property
    def id(self) -> str:
        return str(self.attributes["id"])

    @property
    def source(self) -> str:
        return str(self.attributes["source"])

    @property
    def type(self) -> str:
        return str(self.attributes["type"])

    @property
    def specversion(self) -> str:
        return str(self.attributes["specversion"])

    @property
    def datacontenttype(self) -> str | None:
        v = self.attributes.get("datacontenttype")
        return None if v is None else str(v)

    def get(self, name: str) -> AttributeValue | None:
        return self.attributes.get(name)

    def with_attributes(self, **extra: AttributeValue) -> CloudEvent:
        """A copy with attributes added or replaced (used for dead-letter and reply annotations)."""
        attrs = dict(self.attributes)
        attrs.update(extra)
        return CloudEvent(attrs, self.data, self.json_data)


def canonical_string(value: AttributeValue) -> str:
    """The canonical string encoding of an attribute value (CloudEvents type system)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
