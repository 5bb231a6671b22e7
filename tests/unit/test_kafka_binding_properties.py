"""Properties of the Kafka binding: any record decodes to a CloudEvent, None (raw) or a SchemaError, never
another exception; valid events survive encode → decode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.cloudevent import CloudEvent, validate_event
from schemas.errors import SchemaError
from schemas.kafka_binding import from_kafka, to_kafka_binary, to_kafka_structured, wrap_kafka_record
from tests.unit.binding_strategies import as_strings, events, json_bodies, kafka_headers, typed

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
def test_decoded_events_survive_re_encoding(headers: list[tuple[str, bytes | None]], value: bytes | None) -> None:
    try:
        ev = from_kafka(headers, value)
    except SchemaError:
        return
    if ev is None:
        return
    again = from_kafka(*to_kafka_structured(ev))
    assert again is not None and typed(again) == typed(ev)
