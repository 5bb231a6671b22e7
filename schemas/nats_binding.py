"""The CloudEvents NATS protocol binding ([main] draft, after v1.0.2): binary and structured modes.

Binary: NATS headers `ce-<name>` (case-insensitive), percent-encoded like HTTP; `datacontenttype` travels as
`ce-datacontenttype` (a `Content-Type` header is accepted on receive when there is no `ce-datacontenttype`).
Structured: a `Content-Type` of `application/cloudevents...`, or a header-less message whose payload is a
JSON object with a top-level `specversion` (the v1.0.2 structured-only binding).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from schemas.cloudevent import (
    AttributeValue,
    CloudEvent,
    canonical_string,
    format_time,
    is_media_type,
    make_event,
    validate_attributes,
)
from schemas.errors import UnsupportedFormat
from schemas.headers import decode_ce_headers, encode_header_value, find_header
from schemas.json_format import (
    CONTENT_TYPE,
    MEDIA_TYPE,
    decode_structured,
    encode_structured,
    sniff_structured,
)


def from_nats(headers: Mapping[str, str] | None, payload: bytes) -> CloudEvent | None:
    """Decode a NATS message that is a CloudEvent; None for a raw message.

    Raises InvalidCloudEvent, and UnsupportedFormat for a structured format other than JSON
    (NATS has no batch mode).
    """
    content_type = find_header(headers, "content-type") if headers else None
    if content_type is not None and content_type.lstrip().lower().startswith("application/cloudevents"):
        if content_type.partition(";")[0].strip().lower() != MEDIA_TYPE:
            raise UnsupportedFormat(content_type)
        return decode_structured(payload)
    attrs: dict[str, AttributeValue] = decode_ce_headers(headers) if headers else {}
    if "specversion" in attrs:
        if "datacontenttype" not in attrs and content_type is not None:
            attrs["datacontenttype"] = content_type
        validate_attributes(attrs)
        return CloudEvent(attrs, bytes(payload))
    if not attrs and content_type is None:
        return sniff_structured(payload)
    return None


def wrap_nats_message(
    *,
    subject: str,
    stream: str | None,
    sequence: int | None,
    timestamp: datetime | None,
    headers: Mapping[str, str] | None,
    payload: bytes,
    event_type: str,
    event_source: str,
) -> CloudEvent:
    """A CloudEvent for a raw NATS message: id `<stream>/<sequence>` for JetStream (redelivery keeps it),
    else a new uuid4; `time` from `timestamp` (UTC, microseconds; omitted when None); `datacontenttype`
    from a valid Content-Type header; data = the payload. `subject` is not mapped (`source` names it).
    """
    del subject  # the caller puts it in event_source (`nats://<subject>`)
    if stream is not None and sequence is not None:
        event_id = f"{stream}/{sequence}"
    else:
        event_id = str(uuid.uuid4())
    attrs: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": event_id,
        "source": event_source,
        "type": event_type,
    }
    if timestamp is not None:
        attrs["time"] = format_time(timestamp, digits=6)
    content_type = find_header(headers, "content-type") if headers else None
    if content_type is not None and is_media_type(content_type):
        attrs["datacontenttype"] = content_type
    return make_event(attrs, bytes(payload))


def to_nats_binary(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Binary mode: every attribute (`datacontenttype` included) as a percent-encoded `ce-<name>` header."""
    headers = {"ce-" + name: encode_header_value(canonical_string(v)) for name, v in ev.attributes.items()}
    if ev.json_data and "datacontenttype" not in ev.attributes:
        headers["ce-datacontenttype"] = "application/json"
    return headers, ev.data if ev.data is not None else b""


def to_nats_structured(ev: CloudEvent) -> tuple[dict[str, str], bytes]:
    """Structured mode: `Content-Type: application/cloudevents+json; charset=utf-8` and the JSON event."""
    return {"Content-Type": CONTENT_TYPE}, encode_structured(ev)

