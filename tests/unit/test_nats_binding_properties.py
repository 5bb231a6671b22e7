"""Properties of the NATS binding: any message decodes to a CloudEvent, None (raw) or a SchemaError, never
another exception; valid events survive encode → decode."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.cloudevent import CloudEvent, validate_event
from schemas.errors import SchemaError
from schemas.nats_binding import from_nats, to_nats_binary, to_nats_structured, wrap_nats_message
from tests.unit.binding_strategies import as_strings, events, json_bodies, text_headers, typed, typed_as_json_value

payloads = st.one_of(st.binary(max_size=80), json_bodies())


@given(st.one_of(st.none(), text_headers()), payloads)
def test_any_message_decodes_or_raises_schema_error(headers: dict[str, str] | None, payload: bytes) -> None:
    try:
        ev = from_nats(headers, payload)
    except SchemaError:
        return
    assert ev is None or validate_event(ev) is ev


@given(st.one_of(st.none(), text_headers()), payloads, st.one_of(st.none(), st.datetimes()),
       st.one_of(st.none(), st.integers(min_value=0, max_value=2**64 - 1)))
def test_any_raw_message_wraps_into_a_valid_event(headers: dict[str, str] | None, payload: bytes,
                                                  timestamp: datetime | None, sequence: int | None) -> None:
    ev = wrap_nats_message(subject="orders", stream="S", sequence=sequence, timestamp=timestamp, headers=headers,
                           payload=payload, event_type="t", event_source="nats://orders")
    assert validate_event(ev) is ev
    assert ev.data == payload


@given(events())
def test_binary_round_trip_keeps_attributes_as_strings_and_data(ev: CloudEvent) -> None:
    headers, payload = to_nats_binary(ev)
    got = from_nats(headers, payload)
    assert got is not None
    # NATS cannot tell "no data" from empty data: both arrive as an empty payload.
    assert typed(got) == typed(CloudEvent(as_strings(ev), ev.data or b""))


@given(events())
def test_structured_round_trip_is_exact(ev: CloudEvent) -> None:
    got = from_nats(*to_nats_structured(ev))
    assert got is not None
    assert typed(got) == typed(ev)


@given(st.one_of(st.none(), text_headers()), payloads)
def test_decoded_events_survive_re_encoding(headers: dict[str, str] | None, payload: bytes) -> None:
    try:
        ev = from_nats(headers, payload)
    except SchemaError:
        return
    if ev is None:
        return
    again = from_nats(*to_nats_structured(ev))
    assert again is not None and typed_as_json_value(again) == typed_as_json_value(ev)
