"""Kafka protocol binding (CLOUDEVENTS.md §4; edge cases 1, 2, 11, 13, 17, 18, 20)."""

from __future__ import annotations

import pytest

from schemas.cloudevent import make_event
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.http_binding import from_http, to_binary
from schemas.kafka_binding import (
    from_kafka,
    kafka_key,
    to_kafka_binary,
    to_kafka_structured,
    wrap_kafka_record,
)

CE = [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"/s"), ("ce_type", b"com.example.x")]
BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "com.example.x"}
STRUCT = b'{"specversion":"1.0","id":"1","source":"/s","type":"com.example.x","data":{"a":1}}'


def test_binary_receive() -> None:
    headers = [
        *CE,
        ("content-type", b"application/json"),
        ("ce_partitionkey", b"pk"),
        ("traceparent", b"00-x"),
    ]
    ev = from_kafka(headers, b'{"a":1}')
    assert ev is not None
    assert dict(ev.attributes) == {**BASE, "datacontenttype": "application/json", "partitionkey": "pk"}
    assert ev.data == b'{"a":1}'


def test_binary_values_not_percent_decoded() -> None:
    ev = from_kafka([*CE, ("ce_subject", "Euro € 😀 %41".encode())], None)
    assert ev is not None and ev.attributes["subject"] == "Euro € 😀 %41"


def test_raw_record_is_none() -> None:
    assert from_kafka([], b"hello") is None
    assert from_kafka([("content-type", b"application/json")], b"{}") is None
    assert from_kafka([("ce_id", b"1"), ("ce_type", b"t")], b"x") is None  # no ce_specversion: not a CE


def test_missing_id_rejected() -> None:  # edge case 2
    with pytest.raises(InvalidCloudEvent) as info:
        from_kafka([h for h in CE if h[0] != "ce_id"], b"")
    assert info.value.field == "id"


def test_invalid_utf8_header_rejected() -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        from_kafka([*CE, ("ce_subject", b"\xc0\xa0")], b"")
    assert info.value.field == "ce_subject"
    assert info.value.location == "header"


def test_duplicate_header_rejected() -> None:
    with pytest.raises(InvalidCloudEvent, match="more than once"):
        from_kafka([*CE, ("ce_id", b"2")], b"")


def test_the_first_unusable_ce_header_is_the_error_in_header_order() -> None:
    """One pass decodes the headers: a null, non-UTF-8 or repeated `ce_` header is reported as the first one
    in header order, naming it; in structured mode `ce_` headers play no part, whatever they hold."""
    with pytest.raises(InvalidCloudEvent, match="null value") as info:
        from_kafka([*CE, ("ce_subject", None), ("ce_id", b"2")], b"")
    assert info.value.field == "ce_subject"
    with pytest.raises(InvalidCloudEvent, match="UTF-8") as info:
        from_kafka([*CE, ("ce_subject", b"\xc0"), ("ce_subject", b"ok")], b"")  # the bad one, not the repeat
    assert info.value.field == "ce_subject"
    with pytest.raises(InvalidCloudEvent, match="more than once") as info:
        from_kafka([*CE, ("ce_id", None)], b"")  # a repeat, however bad its value
    assert info.value.field == "ce_id"
    structured = [("content-type", b"application/cloudevents+json"), ("ce_id", None), ("ce_x", b"\xc0")]
    ev = from_kafka(structured, STRUCT)
    assert ev is not None and ev.id == "1"


def test_ce_datacontenttype_must_agree_with_content_type() -> None:
    ev = from_kafka([*CE, ("ce_datacontenttype", b"text/plain")], b"x")
    assert ev is not None and ev.attributes["datacontenttype"] == "text/plain"
    with pytest.raises(InvalidCloudEvent):
        from_kafka([*CE, ("ce_datacontenttype", b"text/plain"), ("content-type", b"application/json")], b"x")


def test_null_and_empty_value() -> None:  # edge case 11
    ev = from_kafka(CE, None)
    assert ev is not None and ev.data is None
    ev = from_kafka(CE, b"")
    assert ev is not None and ev.data == b""


def test_structured_receive_case_insensitive_with_ce_headers() -> None:  # edge case 13
    headers = [("content-type", b"Application/CloudEvents+JSON; charset=utf-8"), ("ce_id", b"ignored")]
    ev = from_kafka(headers, STRUCT)
    assert ev is not None and ev.id == "1" and ev.data == b'{"a":1}' and ev.json_data


def test_structured_unknown_format_and_batch() -> None:  # edge case 18
    with pytest.raises(UnsupportedFormat):
        from_kafka([("content-type", b"application/cloudevents+avro")], b"\x00")
    with pytest.raises(UnsupportedFormat, match="no batch mode"):
        from_kafka([("content-type", b"application/cloudevents-batch+json")], b"[]")
    with pytest.raises(InvalidCloudEvent):
        from_kafka([("content-type", b"application/cloudevents+json")], None)


def test_receive_never_touches_partitionkey() -> None:  # edge case 17
    ev = from_kafka([*CE, ("ce_partitionkey", b"pk")], b"")
    assert ev is not None and ev.attributes["partitionkey"] == "pk"
    ev = from_kafka(CE, b"")
    assert ev is not None and "partitionkey" not in ev.attributes  # nothing invented (edge case 20)


def test_to_kafka_binary_keeps_partitionkey_and_content_type() -> None:  # edge case 17
    ev = make_event(
        {
            **BASE,
            "partitionkey": "pk",
            "datacontenttype": "text/plain",
            "n": 3,
            "b": False,
            "subject": "Euro € 😀",
        },
        b"x",
    )
    headers, value = to_kafka_binary(ev)
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"1"),
        ("ce_source", b"/s"),
        ("ce_type", b"com.example.x"),
        ("ce_partitionkey", b"pk"),
        ("content-type", b"text/plain"),
        ("ce_n", b"3"),
        ("ce_b", b"false"),
        ("ce_subject", "Euro € 😀".encode()),
    ]
    assert value == b"x"
    assert kafka_key(ev) == b"pk"
    assert from_kafka(headers, value) == make_event({**ev.attributes, "n": "3", "b": "false"}, b"x")


def test_to_kafka_binary_no_data_is_null_value() -> None:
    _, value = to_kafka_binary(make_event(BASE))
    assert value is None
    assert kafka_key(make_event(BASE)) is None


def test_to_kafka_structured() -> None:
    ev = make_event({**BASE, "partitionkey": "pk"}, b"x")
    headers, value = to_kafka_structured(ev)
    assert headers == [("content-type", b"application/cloudevents+json; charset=utf-8")]
    assert from_kafka(headers, value) == ev


def test_http_binary_to_kafka_and_back_transcodes_percent_encoding() -> None:
    http_headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "ce-subject": "Euro%20%E2%82%AC%20%F0%9F%98%80",
    }
    [ev] = from_http(http_headers, b"")
    kheaders, _ = to_kafka_binary(ev)
    assert ("ce_subject", "Euro € 😀".encode()) in kheaders
    back = from_kafka(kheaders, None)
    assert back is not None
    assert to_binary(back)[0]["ce-subject"] == "Euro%20%E2%82%AC%20%F0%9F%98%80"


def test_json_data_without_content_type_sets_application_json() -> None:
    ev = from_kafka([("content-type", b"application/cloudevents+json")], STRUCT)
    assert ev is not None
    headers, value = to_kafka_binary(ev)
    assert ("content-type", b"application/json") in headers
    assert value == b'{"a":1}'


# --- raw records -----------------------------------------------------------------------------------


def test_wrap_kafka_record() -> None:
    ev = wrap_kafka_record(
        topic="orders",
        partition=3,
        offset=42,
        timestamp_ms=1712345678901,
        key=b"cust-1",
        headers=[("content-type", b"application/json"), ("x", b"y")],
        value=b'{"a":1}',
        event_type="com.example.order",
        event_source="kafka://c1/orders",
    )
    assert dict(ev.attributes) == {
        "specversion": "1.0",
        "id": "orders/3/42",
        "source": "kafka://c1/orders",
        "type": "com.example.order",
        "time": "2024-04-05T19:34:38.901Z",
        "datacontenttype": "application/json",
        "partitionkey": "cust-1",
    }
    assert ev.data == b'{"a":1}'
    assert kafka_key(ev) == b"cust-1"


def test_wrap_kafka_record_minimal() -> None:
    ev = wrap_kafka_record(
        topic="t",
        partition=0,
        offset=0,
        timestamp_ms=None,
        key=b"\xff\xfe",
        headers=[],
        value=None,
        event_type="x",
        event_source="kafka://c/t",
    )
    assert dict(ev.attributes) == {"specversion": "1.0", "id": "t/0/0", "source": "kafka://c/t", "type": "x"}
    assert ev.data is None
    ev = wrap_kafka_record(
        topic="t",
        partition=0,
        offset=1,
        timestamp_ms=0,
        key=b"",
        headers=[("content-type", b"xyz")],
        value=b"",
        event_type="x",
        event_source="s",
    )
    assert dict(ev.attributes) == {
        "specversion": "1.0",
        "id": "t/0/1",
        "source": "s",
        "type": "x",
        "time": "1970-01-01T00:00:00.000Z",
    }
    assert ev.data == b""


@pytest.mark.parametrize(
    ("timestamp_ms", "time"),
    [
        (253402300799999, "9999-12-31T23:59:59.999Z"),
        (253402300800000, None),  # year 10000: found by the property test, was a ValueError
        (2**63 - 1, None),
    ],
)
def test_wrap_kafka_record_timestamp_beyond_rfc3339_gets_no_time(timestamp_ms: int, time: str | None) -> None:
    ev = wrap_kafka_record(topic="t", partition=0, offset=0, timestamp_ms=timestamp_ms, key=None, headers=[],
                           value=None, event_type="x", event_source="s")
    assert ev.attributes.get("time") == time


def test_wrap_kafka_record_invalid_type_raises() -> None:
    with pytest.raises(InvalidCloudEvent):
        wrap_kafka_record(
            topic="t",
            partition=0,
            offset=0,
            timestamp_ms=None,
            key=None,
            headers=[],
            value=b"",
            event_type="",
            event_source="s",
        )


# --- the fast path: a record whose header keys a valid event taught ------------------------------------------

FAST = [*CE, ("content-type", b"application/json"), ("traceparent", b"00-x")]


def test_a_known_record_shape_decodes_with_its_http_headers_ready() -> None:
    from_kafka(FAST, b"{}")  # teaches the keys
    ev = from_kafka([*FAST[:1], ("ce_id", b"2"), *FAST[2:]], b'{"a":1}')
    assert ev is not None and ev.http_headers is not None  # the fast path built them
    assert dict(ev.attributes) == {**BASE, "id": "2", "datacontenttype": "application/json"}
    headers, body = to_binary(ev)
    assert headers == {"ce-specversion": "1.0", "ce-id": "2", "ce-source": "/s", "ce-type": "com.example.x",
                       "Content-Type": "application/json"}
    assert body == b'{"a":1}'
    headers["ce-id"] = "changed"  # a copy: the event keeps its own
    assert to_binary(ev)[0]["ce-id"] == "2"
    assert to_binary(ev.with_attributes(id="3"))[0]["ce-id"] == "3"  # a changed copy is encoded again


KNOWN = [*FAST, ("ce_subject", b"s"), ("ce_time", b"2026-12-01T00:00:00Z")]


@pytest.mark.parametrize(("edit", "why"), [
    (("ce_id", b"a b"), None),  # needs percent-encoding: decoded fast, encoded the usual way
    (("ce_id", b""), "must be a non-empty String"),
    (("ce_id", None), "null value"),
    (("ce_id", b"\xff"), "not valid UTF-8"),
    (("ce_id", b"a\nb"), "forbidden character"),  # the fast path's own separator
    (("ce_specversion", b"0.3"), "0.3 is not supported"),
    (("ce_subject", b"\x7f"), "forbidden character"),
    (("ce_time", b"2026-13-01T00:00:00Z"), "month out of range"),
    (("content-type", b"not a type"), "media type"),
])
def test_a_known_shape_with_a_fault_gets_the_careful_answer(edit: tuple[str, bytes | None], why: str | None) -> None:
    from_kafka(KNOWN, b"")  # teaches the shape: these keys in this order
    record = [edit if h[0] == edit[0] else h for h in KNOWN]  # the same keys, one value changed
    if why is None:
        ev = from_kafka(record, b"")
        assert ev is not None and ev.http_headers is None
        assert to_binary(ev)[0]["ce-id"] == "a%20b"
        return
    with pytest.raises(InvalidCloudEvent, match=why):
        from_kafka(record, b"")


def test_a_known_shape_with_the_separator_in_its_last_value_gets_the_careful_answer() -> None:
    shape = [*FAST, ("ce_subject", b"s")]
    from_kafka(shape, b"")
    with pytest.raises(InvalidCloudEvent, match="forbidden character"):  # not one value more
        from_kafka([*FAST, ("ce_subject", b"s\nt")], b"")


def test_a_known_shape_with_a_new_content_type_is_learnt() -> None:
    from_kafka(KNOWN, b"")
    record = [("content-type", b"text/x-new") if h[0] == "content-type" else h for h in KNOWN]
    first = from_kafka(record, b"")  # a media type not seen before: the careful path checks it
    assert first is not None and first.http_headers is None and first.datacontenttype == "text/x-new"
    again = from_kafka(record, b"")  # now known
    assert again is not None and again.http_headers is not None and again == first


def test_a_known_shape_repeating_an_attribute_is_rejected() -> None:
    from_kafka(FAST, b"")
    with pytest.raises(InvalidCloudEvent, match="more than once"):
        from_kafka([*FAST, ("ce_id", b"1")], b"")
    with pytest.raises(InvalidCloudEvent, match="differs from the content-type"):
        from_kafka([*FAST, ("ce_datacontenttype", b"text/plain")], b"")


def test_a_known_shape_with_a_structured_content_type_is_decoded_as_structured() -> None:
    from_kafka([*CE, ("ce_datacontenttype", b"application/cloudevents+json")], b"")  # valid in binary mode
    from_kafka(FAST, b"")
    ev = from_kafka([*CE, ("content-type", b"application/cloudevents+json"), ("traceparent", b"00-x")], STRUCT)
    assert ev is not None and ev.http_headers is None and ev.attributes["id"] == "1"
    assert ev.data == b'{"a":1}'
