"""Dead-letter envelope (DESIGN.md, Dead letters)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from schemas.cloudevent import make_event, validate_event
from schemas.deadletter import dead_letter_event, sanitize_reason, undecodable_event
from schemas.http_binding import to_binary

BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "datacontenttype": "application/json"}
AT = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def test_dead_letter_event_keeps_original_and_adds_extensions() -> None:
    ev = make_event({**BASE, "partitionkey": "k"}, b'{"a":1}', json_data=True)
    dl = dead_letter_event(
        ev, reason="HTTP 503 from gateway", code=503, attempts=5, trigger="shop/billing", at=AT
    )
    assert dict(dl.attributes) == {
        **BASE,
        "partitionkey": "k",
        "deadletterreason": "HTTP 503 from gateway",
        "deadlettercode": 503,
        "deadletterattempts": 5,
        "deadlettertrigger": "shop/billing",
        "deadlettertime": "2024-05-06T07:08:09.123Z",
    }
    assert dl.data == ev.data and dl.json_data is True
    assert dict(ev.attributes) == {**BASE, "partitionkey": "k"}  # original untouched
    validate_event(dl)
    headers, _ = to_binary(dl)
    assert (
        headers["ce-deadlettercode"] == "503"
        and headers["ce-deadletterreason"] == "HTTP%20503%20from%20gateway"
    )


def test_reason_sanitized_and_truncated() -> None:
    assert sanitize_reason("line1\nline2\x00\x7f") == "line1 line2  "
    long = "€" * 1000  # 3000 bytes
    out = sanitize_reason(long)
    assert len(out.encode()) <= 1024
    assert out.endswith("…") and out[:-1] == "€" * 340
    assert sanitize_reason("") == "unknown"
    assert sanitize_reason("x" * 1024) == "x" * 1024


def test_dead_letter_time_converted_to_utc_and_replaces_previous() -> None:
    ev = make_event(BASE)
    at = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    first = dead_letter_event(ev, reason="a", code=0, attempts=1, trigger="ns/n", at=at)
    assert first.attributes["deadlettertime"] == "2024-05-06T07:08:09.000Z"
    second = dead_letter_event(first, reason="b", code=500, attempts=2, trigger="ns/n", at=AT)
    assert second.attributes["deadletterreason"] == "b" and second.attributes["deadletterattempts"] == 2


def test_undecodable_event() -> None:
    ev = undecodable_event(
        id="orders/0/5",
        source="kafka://c/orders",
        raw=b"\xff\x00garbage",
        content_type="application/cloudevents+json",
        reason="body is not valid UTF-8",
        trigger="shop/billing",
        at=AT,
    )
    assert dict(ev.attributes) == {
        "specversion": "1.0",
        "id": "orders/0/5",
        "source": "kafka://c/orders",
        "type": "dev.eventbus.deadletter.undecodable",
        "datacontenttype": "application/cloudevents+json",
        "deadletterreason": "body is not valid UTF-8",
        "deadlettercode": 0,
        "deadletterattempts": 0,
        "deadlettertrigger": "shop/billing",
        "deadlettertime": "2024-05-06T07:08:09.123Z",
    }
    assert ev.data == b"\xff\x00garbage"


def test_undecodable_defaults_to_octet_stream() -> None:
    for ct in (None, "xyz"):
        ev = undecodable_event(
            id="1", source="s", raw=None, content_type=ct, reason="r", trigger="a/b", at=AT
        )
        assert ev.attributes["datacontenttype"] == "application/octet-stream"
        assert ev.data is None
