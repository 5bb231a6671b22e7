"""NATS protocol binding ([main] draft: binary via ce- headers, structured; CLOUDEVENTS.md §5)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas.cloudevent import make_event
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.http_binding import from_http, to_binary
from schemas.nats_binding import from_nats, to_nats_binary, to_nats_structured, wrap_nats_message

CE = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "com.example.x"}
BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "com.example.x"}
STRUCT = b'{"specversion":"1.0","id":"1","source":"/s","type":"com.example.x","data":"I\'m just a string"}'


def test_binary_receive_percent_decoded_and_ce_datacontenttype() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "com.example.x",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
        "ce-datacontenttype": "text/plain",
        "Nats-Msg-Id": "abc",
    }
    ev = from_nats(headers, b"hi")
    assert ev is not None
    assert dict(ev.attributes) == {**BASE, "subject": "Euro € 😀", "datacontenttype": "text/plain"}
    assert ev.data == b"hi"


def test_binary_content_type_fallback() -> None:
    ev = from_nats({**CE, "Content-Type": "application/json"}, b"{}")
    assert ev is not None and ev.attributes["datacontenttype"] == "application/json"
    ev = from_nats({**CE, "ce-datacontenttype": "text/plain", "content-type": "application/json"}, b"{}")
    assert ev is not None and ev.attributes["datacontenttype"] == "text/plain"


def test_binary_invalid_utf8_rejected() -> None:  # edge case 5
    with pytest.raises(InvalidCloudEvent) as info:
        from_nats({**CE, "ce-subject": "%C0%A0"}, b"")
    assert info.value.field == "ce-subject"


def test_binary_missing_id_rejected() -> None:  # edge case 2
    with pytest.raises(InvalidCloudEvent) as info:
        from_nats({k: v for k, v in CE.items() if k != "ce-id"}, b"")
    assert info.value.field == "id"


def test_binary_without_specversion_is_raw() -> None:  # edge case 1
    headers = {k: v for k, v in CE.items() if k != "ce-specversion"}
    assert from_nats(headers, b"x") is None  # no ce-specversion: not a CloudEvent (the caller wraps it)


def test_structured_by_content_type() -> None:
    ev = from_nats({"content-type": "Application/CloudEvents+JSON", "ce-id": "ignored"}, STRUCT)
    assert ev is not None and ev.id == "1" and ev.data == b'"I\'m just a string"'
    with pytest.raises(UnsupportedFormat):
        from_nats({"Content-Type": "application/cloudevents+avro"}, b"x")


def test_structured_without_headers_sniffed() -> None:
    for headers in (None, {}, {"Nats-Msg-Id": "1"}):
        ev = from_nats(headers, STRUCT)
        assert ev is not None and ev.id == "1"
    with pytest.raises(InvalidCloudEvent):
        from_nats(None, b'{"specversion":"0.9","id":"1","source":"/s","type":"t"}')


def test_raw_messages_are_none() -> None:
    assert from_nats(None, b"hello") is None
    assert from_nats(None, b'{"order":1}') is None
    assert from_nats({"Content-Type": "application/json"}, STRUCT) is None  # declared plain JSON: raw
    assert from_nats(None, b"") is None


def test_to_nats_binary_uses_ce_datacontenttype() -> None:
    ev = make_event(
        {**BASE, "datacontenttype": "text/plain; charset=utf-8", "subject": "Euro € 😀", "flag": True},
        "Euro € 😀".encode(),
    )
    headers, payload = to_nats_binary(ev)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "com.example.x",
        "ce-datacontenttype": "text/plain;%20charset=utf-8",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
        "ce-flag": "true",
    }
    assert "Content-Type" not in headers
    assert payload == "Euro € 😀".encode()
    back = from_nats(headers, payload)
    assert back == make_event({**ev.attributes, "flag": "true"}, payload)


def test_to_nats_structured_round_trip_just_a_string() -> None:  # edge case 9
    ev = from_nats(None, STRUCT)
    assert ev is not None
    headers, payload = to_nats_structured(ev)
    assert headers == {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    assert payload == STRUCT
    bheaders, body = to_nats_binary(ev)
    assert body == b'"I\'m just a string"' and bheaders["ce-datacontenttype"] == "application/json"


def test_nats_to_http_binary() -> None:
    ev = from_nats({**CE, "ce-datacontenttype": "application/json"}, b"{}")
    assert ev is not None
    headers, body = to_binary(ev)
    assert headers["Content-Type"] == "application/json" and "ce-datacontenttype" not in headers
    assert from_http(headers, body) == [ev]


def test_wrap_jetstream_message() -> None:
    ev = wrap_nats_message(
        subject="orders.created",
        stream="ORDERS",
        sequence=17,
        timestamp=datetime(2024, 1, 2, 4, 4, 5, 123456, tzinfo=timezone(timedelta(hours=1))),
        headers={"Content-Type": "application/json"},
        payload=b"{}",
        event_type="com.example.order",
        event_source="nats://orders.created",
    )
    assert dict(ev.attributes) == {
        "specversion": "1.0",
        "id": "ORDERS/17",
        "source": "nats://orders.created",
        "type": "com.example.order",
        "time": "2024-01-02T03:04:05.123456Z",
        "datacontenttype": "application/json",
    }
    assert ev.data == b"{}"


def test_wrap_core_nats_message_uuid_id() -> None:
    ev = wrap_nats_message(
        subject="a",
        stream=None,
        sequence=None,
        timestamp=None,
        headers=None,
        payload=b"x",
        event_type="t",
        event_source="nats://a",
    )
    assert uuid.UUID(ev.id).version == 4
    assert set(ev.attributes) == {"specversion", "id", "source", "type"}
    ev2 = wrap_nats_message(
        subject="a",
        stream=None,
        sequence=None,
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
        headers={"content-type": "xyz"},
        payload=b"",
        event_type="t",
        event_source="s",
    )
    assert ev2.id != ev.id
    assert ev2.attributes["time"] == "2024-01-01T00:00:00.000000Z"
    assert "datacontenttype" not in ev2.attributes
