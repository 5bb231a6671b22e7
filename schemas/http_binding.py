"""The CloudEvents HTTP protocol binding (v1.0.2): binary, structured and batched modes.

The mode is decided by Content-Type alone (case-insensitive). Header lookups are case-insensitive for a
plain dict with any casing and for aiohttp's CIMultiDictProxy. Nothing is added on receive.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from schemas.cloudevent import CloudEvent, canonical_string, validate_attributes
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.headers import decode_ce_headers, encode_header_value, find_header
from schemas.json_format import (
    BATCH_CONTENT_TYPE,
    BATCH_MEDIA_TYPE,
    CONTENT_TYPE,
    MEDIA_TYPE,
    decode_batch,
    decode_structured,
    encode_batch,
    encode_structured,
)

Mode = Literal["binary", "structured", "batch"]


def detect_mode(content_type: str | None) -> Mode:
    """`batch` for `application/cloudevents-batch...`, `structured` for `application/cloudevents...`,
    otherwise `binary` (case-insensitive; HTTP binding L138-143)."""
    if content_type is None:
        return "binary"
    ct = content_type.lstrip().lower()
    if ct.startswith("application/cloudevents"):
        return "batch" if ct.startswith("application/cloudevents-batch") else "structured"
    return "binary"


def _media_type(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def is_binary_cloudevent(headers: Mapping[str, str]) -> bool:
    """Whether the message carries a `ce-specversion` header (any casing)."""
    return find_header(headers, "ce-specversion") is not None


def _from_binary(headers: Mapping[str, str], content_type: str | None, body: bytes) -> CloudEvent:
    attrs = decode_ce_headers(headers)
    if "specversion" not in attrs:
        raise InvalidCloudEvent(
            "binary-mode message without a ce-specversion header", "ce-specversion", location="header"
        )
    if content_type is not None:
        if "datacontenttype" in attrs:
            raise InvalidCloudEvent(
                "must not be present together with Content-Type", "ce-datacontenttype", location="header"
            )
        attrs["datacontenttype"] = content_type
    validate_attributes(attrs)
    data: bytes | None = None if (not body and content_type is None) else bytes(body)
    return CloudEvent(attrs, data)


def _structured(content_type: str, body: bytes) -> CloudEvent:
    if _media_type(content_type) != MEDIA_TYPE:
        raise UnsupportedFormat(content_type)
    return decode_structured(body)


def _batch(content_type: str, body: bytes) -> list[CloudEvent]:
    if _media_type(content_type) != BATCH_MEDIA_TYPE:
        raise UnsupportedFormat(content_type)
    return decode_batch(body)


def from_http(headers: Mapping[str, str], body: bytes) -> list[CloudEvent]:
    """Decode an HTTP request into its CloudEvents (one, or a batch's members).

    Raises InvalidCloudEvent (HTTP 400) and UnsupportedFormat (HTTP 415, e.g. `application/cloudevents+avro`).
    A binary-mode request without `ce-specversion` is InvalidCloudEvent; check `is_binary_cloudevent`
    first to treat such requests as raw payloads instead.
    """
    content_type = find_header(headers, "content-type")
    mode = detect_mode(content_type)
    if mode == "binary":
        return [_from_binary(headers, content_type, body)]
    assert content_type is not None
    if mode == "structured":
        return [_structured(content_type, body)]
    return _batch(content_type, body)


def from_http_response(headers: Mapping[str, str], body: bytes) -> CloudEvent | None:
    """The CloudEvent in a function's HTTP response (binary with ce-specversion, or structured), else None.

    A batch response raises UnsupportedFormat (a reply is one event); an invalid one raises InvalidCloudEvent.
    """
    content_type = find_header(headers, "content-type")
    mode = detect_mode(content_type)
    if mode == "binary":
        if not is_binary_cloudevent(headers):
            return None
        return _from_binary(headers, content_type, body)
    assert content_type is not None
    if mode == "batch":
        raise UnsupportedFormat(content_type, "a batch is not a valid reply (one CloudEvent expected)")
    return _structured(content_type, body)


_CE_HEADER: dict[str, str] = {}
"""Attribute name -> its `ce-` header name (built once per name: this runs for every dispatch)."""


def to_binary(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary mode: `ce-<name>` headers (percent-encoded canonical strings), Content-Type from
    datacontenttype (`application/json` when the data is JSON from a JSON-format event without one,
    per JSON format L197-205), the data bytes as body (empty when there is no data)."""
    ready = ev.http_headers
    if ready is not None:  # built by the decoder: a copy, so the caller may change it
        return dict(ready), ev.data if ev.data is not None else b""
    headers: dict[str, str] = {}
    names = _CE_HEADER
    for name, value in ev.attributes.items():
        if name == "datacontenttype":
            headers["Content-Type"] = str(value)
        else:
            header = names.get(name)
            if header is None:
                header = "ce-" + name
                if len(names) < 4096:
                    names[name] = header
            headers[header] = encode_header_value(value if type(value) is str else canonical_string(value))
    if ev.json_data and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    return headers, ev.data if ev.data is not None else b""


def to_structured(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Structured mode: `application/cloudevents+json; charset=utf-8` and the JSON-format body."""
    return {"Content-Type": CONTENT_TYPE}, encode_structured(ev)


def to_batch(evs: Iterable[CloudEvent]) -> tuple[dict[str, str], bytes]:
    """Batched mode: `application/cloudevents-batch+json; charset=utf-8` and a JSON array."""
    return {"Content-Type": BATCH_CONTENT_TYPE}, encode_batch(evs)
