"""Properties of the Kafka binding: any record decodes to a CloudEvent, None (raw) or a SchemaError, never
another exception; valid events survive encode → decode."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import example, given
from hypothesis import strategies as st

from schemas.cloudevent import CloudEvent, validate_event
from schemas.errors import SchemaError
from schemas.http_binding import to_binary
from schemas.kafka_binding import (
    KafkaHeaders,
    _from_kafka_careful,
    from_kafka,
    to_kafka_binary,
    to_kafka_structured,
    wrap_kafka_record,
)
from tests.unit.binding_strategies import as_strings, events, json_bodies, kafka_headers, typed, typed_as_json_value

values = st.one_of(st.none(), st.binary(max_size=80), json_bodies())


@given(kafka_headers(), values)
def test_any_record_decodes_or_raises_schema_error(headers: list[tuple[str, bytes | None]],
                                                   value: bytes | None) -> None:
    try:
        ev = from_kafka(headers, value)
    except SchemaError:
        return
    assert ev is None or validate_event(ev) is ev


@given(
    kafka_headers(), values,
    st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.none(),
    st.one_of(st.none(), st.binary(max_size=16)),
    st.integers(min_value=0, max_value=2**31 - 1), st.integers(min_value=0, max_value=2**63 - 1),
)
def test_any_raw_record_wraps_into_a_valid_event(headers: list[tuple[str, bytes | None]], value: bytes | None,
                                                 timestamp_ms: int | None, key: bytes | None, partition: int,
                                                 offset: int) -> None:
    ev = wrap_kafka_record(topic="orders", partition=partition, offset=offset, timestamp_ms=timestamp_ms, key=key,
                           headers=headers, value=value, event_type="t", event_source="kafka://orders")
    assert validate_event(ev) is ev
    assert ev.id == f"orders/{partition}/{offset}"
    assert ev.data == value


@given(events())
def test_binary_round_trip_keeps_attributes_as_strings_and_data(ev: CloudEvent) -> None:
    headers, value = to_kafka_binary(ev)
    got = from_kafka(headers, value)
    assert got is not None
    assert typed(got) == typed(CloudEvent(as_strings(ev), ev.data))


@given(events())
def test_structured_round_trip_is_exact(ev: CloudEvent) -> None:
    headers, value = to_kafka_structured(ev)
    got = from_kafka(headers, value)
    assert got is not None
    assert typed(got) == typed(ev)


@given(kafka_headers(), values)
@example([("ce_specversion", b"1.0"), ("ce_id", b"x"), ("ce_source", b"/s"), ("ce_type", b"t")], b"\t0")
def test_decoded_events_survive_re_encoding(headers: list[tuple[str, bytes | None]], value: bytes | None) -> None:
    try:
        ev = from_kafka(headers, value)
    except SchemaError:
        return
    if ev is None:
        return
    again = from_kafka(*to_kafka_structured(ev))
    assert again is not None and typed_as_json_value(again) == typed_as_json_value(ev)


def _outcome(decode: Callable[[KafkaHeaders, bytes | None], CloudEvent | None], headers: KafkaHeaders,
             value: bytes | None) -> object:
    """What a decoder makes of a record, comparable: the event's attributes, data and HTTP request, or the
    error it raises (type and message)."""
    try:
        ev = decode(headers, value)
    except SchemaError as exc:
        return (type(exc).__name__, str(exc))
    return None if ev is None else (dict(ev.attributes), ev.data, to_binary(ev))


_damage_values = st.one_of(
    st.none(), st.just(b""), st.binary(max_size=12), st.sampled_from(
        [b"1.0", b"0.3", b"a b", b"100%", b'"q"', b"\xc3\xa9", b"\x00", b"2026-12-01T00:00:00Z",
         b"2026-13-01T00:00:00Z", b"application/json", b"application/cloudevents+json",
         b"text/plain; charset=utf-8", b"not a type", b"http://example.com/s", b"::"]))
_damage_keys = st.sampled_from(["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_dataschema",
                                "ce_datacontenttype", "ce_subject", "ce_ext", "content-type", "Content-Type",
                                "traceparent", "ce_", "ce_Bad", "ce_data"])


_ascii = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12)
plain_events = st.builds(
    lambda extra, ident, ct, at: CloudEvent({"specversion": "1.0", "id": ident, "source": "/s", "type": "t", **extra,
                                             **ct, **at}),
    st.dictionaries(st.sampled_from(["subject", "ext", "partitionkey"]), _ascii, max_size=3),
    _ascii,
    st.one_of(st.just({}), st.sampled_from(["application/json", "text/plain", "application/cloudevents+json"]).map(
        lambda v: {"datacontenttype": v})),
    st.one_of(st.just({}), st.sampled_from(["2026-12-01T00:00:00Z", "2026-12-01T00:00:00.5+01:00"]).map(
        lambda v: {"time": v})),
)
"""Events whose values are printable ASCII: the fast path's own ground."""


@st.composite
def damaged_binary_records(draw: st.DrawFn) -> tuple[KafkaHeaders, KafkaHeaders]:
    """A valid binary-mode record's headers, and the same with up to three edits (a header dropped, repeated,
    added, or its value replaced): the records the fast path sees once it knows the keys."""
    event = draw(st.one_of(plain_events, plain_events, events()))
    headers: list[tuple[str, bytes | None]] = list(to_kafka_binary(event)[0])
    damaged = list(headers)
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        edit = draw(st.sampled_from(["drop", "repeat", "add", "value"]))
        if edit == "add" or not damaged:
            damaged.insert(draw(st.integers(0, len(damaged))), (draw(_damage_keys), draw(_damage_values)))
            continue
        i = draw(st.integers(0, len(damaged) - 1))
        if edit == "drop":
            del damaged[i]
        elif edit == "repeat":
            damaged.append((damaged[i][0], draw(st.one_of(st.just(damaged[i][1]), _damage_values))))
        else:
            damaged[i] = (damaged[i][0], draw(_damage_values))
    return headers, damaged


@given(st.one_of(kafka_headers().map(lambda h: (h, h)), damaged_binary_records(), damaged_binary_records()), values)
def test_the_fast_path_decodes_exactly_as_the_careful_one(records: tuple[KafkaHeaders, KafkaHeaders],
                                                           value: bytes | None) -> None:
    """`from_kafka` takes a fast path for header keys it has decoded a valid event from (remembered across
    examples): whatever it makes of a record, the careful path makes the same, event or error."""
    teach, headers = records
    _outcome(_from_kafka_careful, teach, value)  # a valid record teaches the fast path its keys
    assert _outcome(from_kafka, headers, value) == _outcome(_from_kafka_careful, headers, value)
