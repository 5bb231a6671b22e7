"""Properties of the HTTP binding (binary, structured, batch): any request decodes to CloudEvents or a
SchemaError, never another exception; valid events survive encode → decode."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from schemas.cloudevent import CloudEvent, validate_event
from schemas.errors import SchemaError
from schemas.http_binding import from_http, from_http_response, to_batch, to_binary, to_structured
from tests.unit.binding_strategies import (
    as_strings,
    events,
    header_names,
    header_values,
    json_bodies,
    text_headers,
    typed,
    typed_as_json_value,
)

bodies = st.one_of(st.binary(max_size=80), json_bodies())
# aiohttp hands over a case-insensitive multi-dict, where a header may repeat.
multi_headers = st.lists(st.tuples(header_names, header_values), max_size=8).map(CIMultiDict)


@given(st.one_of(text_headers(), multi_headers), bodies)
def test_any_request_decodes_or_raises_schema_error(headers: dict[str, str], body: bytes) -> None:
    try:
        evs = from_http(headers, body)
    except SchemaError:
        return
    for ev in evs:
        assert validate_event(ev) is ev


@given(st.one_of(text_headers(), multi_headers), bodies)
def test_any_response_decodes_or_raises_schema_error(headers: dict[str, str], body: bytes) -> None:
    try:
        ev = from_http_response(headers, body)
    except SchemaError:
        return
    assert ev is None or validate_event(ev) is ev


def _no_data_is_empty(ev: CloudEvent) -> CloudEvent:
    # HTTP binary mode cannot tell "no data" from empty data: compare them as equal.
    return CloudEvent(ev.attributes, ev.data or b"")


@given(events())
def test_binary_round_trip_keeps_attributes_as_strings_and_data(ev: CloudEvent) -> None:
    [got] = from_http(*to_binary(ev))
    assert typed(_no_data_is_empty(got)) == typed(_no_data_is_empty(CloudEvent(as_strings(ev), ev.data)))
    reply = from_http_response(*to_binary(ev))  # a function's binary-mode answer decodes the same way
    assert reply is not None and typed(reply) == typed(got)


@given(events())
def test_structured_round_trip_is_exact(ev: CloudEvent) -> None:
    [got] = from_http(*to_structured(ev))
    assert typed(got) == typed(ev)


@given(st.lists(events(), max_size=5))
def test_batch_round_trip_is_exact(evs: list[CloudEvent]) -> None:
    got = from_http(*to_batch(evs))
    assert [typed(e) for e in got] == [typed(e) for e in evs]


@given(st.one_of(text_headers(), multi_headers), bodies)
def test_decoded_events_survive_re_encoding(headers: dict[str, str], body: bytes) -> None:
    try:
        evs = from_http(headers, body)
    except SchemaError:
        return
    assert [typed_as_json_value(e) for e in from_http(*to_batch(evs))] == [typed_as_json_value(e) for e in evs]
    for ev in evs:
        [again] = from_http(*to_structured(ev))
        assert typed_as_json_value(again) == typed_as_json_value(ev)
