"""The dead-letter envelope: the original CloudEvent unchanged plus `deadletter*` extension attributes."""

from __future__ import annotations

from datetime import datetime

from schemas.cloudevent import (
    INT32_MAX,
    INT32_MIN,
    AttributeValue,
    CloudEvent,
    format_time,
    is_media_type,
    make_event,
    replace_forbidden,
)

UNDECODABLE_TYPE = "dev.eventbus.deadletter.undecodable"
MAX_REASON_BYTES = 1024


def sanitize_reason(reason: str) -> str:
    """`reason` as a valid CloudEvents String of at most 1 KiB of UTF-8: forbidden characters (controls,
    noncharacters, lone surrogates) become spaces; cut on a character boundary, marked with `…`."""
    text = replace_forbidden(reason)
    raw = text.encode("utf-8")
    if len(raw) > MAX_REASON_BYTES:
        ellipsis = "…".encode()
        raw = raw[: MAX_REASON_BYTES - len(ellipsis)]
        text = raw.decode("utf-8", errors="ignore") + "…"
    return text or "unknown"


def _int32(value: int) -> int:
    return max(INT32_MIN, min(INT32_MAX, int(value)))


def _deadletter_attributes(
    *, reason: str, code: int, attempts: int, trigger: str, at: datetime
) -> dict[str, AttributeValue]:
    return {
        "deadletterreason": sanitize_reason(reason),
        "deadlettercode": _int32(code),
        "deadletterattempts": _int32(attempts),
        "deadlettertrigger": sanitize_reason(trigger),
        "deadlettertime": format_time(at, digits=3),
    }


def dead_letter_event(
    ev: CloudEvent, *, reason: str, code: int, attempts: int, trigger: str, at: datetime
) -> CloudEvent:
    """`ev` with its attributes and data unchanged plus `deadletterreason`, `deadlettercode` (last HTTP
    status, 0 if none), `deadletterattempts`, `deadlettertrigger` (`<namespace>/<name>`) and
    `deadlettertime` (RFC 3339 UTC; a naive `at` is taken as UTC). Existing `deadletter*` are replaced."""
    return ev.with_attributes(
        **_deadletter_attributes(reason=reason, code=code, attempts=attempts, trigger=trigger, at=at)
    )


def undecodable_event(
    *,
    id: str,
    source: str,
    raw: bytes | None,
    content_type: str | None,
    reason: str,
    trigger: str,
    at: datetime,
) -> CloudEvent:
    """A CloudEvent carrying input that could not be decoded: type `dev.eventbus.deadletter.undecodable`,
    data = the raw bytes, `datacontenttype` = `content_type` when it is a valid media type else
    `application/octet-stream`, plus the `deadletter*` attributes with code 0 and attempts 0."""
    attrs: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": UNDECODABLE_TYPE,
        "datacontenttype": (
            content_type
            if content_type is not None and is_media_type(content_type)
            else "application/octet-stream"
        ),
    }
    attrs.update(_deadletter_attributes(reason=reason, code=0, attempts=0, trigger=trigger, at=at))
    return make_event(attrs, raw)
