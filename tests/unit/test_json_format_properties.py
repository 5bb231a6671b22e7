"""Properties of the JSON event format and its batch format: any bytes decode to CloudEvents or an
InvalidCloudEvent, never another exception; valid events survive encode → decode unchanged."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from schemas.cloudevent import CloudEvent, validate_event
from schemas.errors import SchemaError
from schemas.json_format import decode_batch, decode_structured, encode_batch, encode_structured, sniff_structured
from tests.unit.binding_strategies import events, json_bodies, typed

bodies = st.one_of(st.binary(max_size=120), json_bodies())


@given(bodies)
def test_any_body_decodes_as_one_event_or_raises_schema_error(body: bytes) -> None:
    try:
        ev = decode_structured(body)
    except SchemaError:
        return
    assert validate_event(ev) is ev
    assert typed(decode_structured(encode_structured(ev))) == typed(ev)


@given(bodies)
def test_any_body_decodes_as_a_batch_or_raises_schema_error(body: bytes) -> None:
    try:
        evs = decode_batch(body)
    except SchemaError:
        return
    assert all(validate_event(ev) is ev for ev in evs)
    assert [typed(e) for e in decode_batch(encode_batch(evs))] == [typed(e) for e in evs]


@given(bodies)
@example(b'{"specversion":"1.0","id":"x","source":"/","type":"t","datacontenttype":[]}')  # found by CI
def test_sniffing_any_body_gives_an_event_none_or_schema_error(body: bytes) -> None:
    try:
        ev = sniff_structured(body)
    except SchemaError:
        return
    assert ev is None or validate_event(ev) is ev


@given(events())
def test_round_trip_is_exact(ev: CloudEvent) -> None:
    assert typed(decode_structured(encode_structured(ev))) == typed(ev)


@given(st.lists(events(), max_size=5))
def test_batch_round_trip_is_exact(evs: list[CloudEvent]) -> None:
    assert [typed(e) for e in decode_batch(encode_batch(evs))] == [typed(e) for e in evs]
