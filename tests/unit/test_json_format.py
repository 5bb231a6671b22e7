"""JSON event format: data vs data_base64 (CLOUDEVENTS.md §2; edge cases 8, 9, 11, 12, 16)."""

from __future__ import annotations

import base64
import json

import pytest

from schemas.cloudevent import CloudEvent, make_event
from schemas.errors import InvalidCloudEvent
from schemas.json_format import (
    decode_batch,
    decode_structured,
    encode_batch,
    encode_structured,
    sniff_structured,
)

HEAD = '{"specversion":"1.0","id":"1","source":"/s","type":"t"'
BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}


def ev_json(extra: str = "") -> bytes:
    return (HEAD + extra + "}").encode()


def test_json_string_data_stays_quoted() -> None:  # edge case 9, JSON L314-349
    ev = decode_structured(ev_json(',"data":"I\'m just a string"'))
    assert ev.data == b'"I\'m just a string"'
    assert ev.json_data is True
    assert "datacontenttype" not in ev.attributes
    assert encode_structured(ev) == ev_json(',"data":"I\'m just a string"')


def test_json_data_is_verbatim_bytes_never_reparsed() -> None:
    body = ev_json(',"datacontenttype":"application/json","data" : { "b" : [1, 2.50, "\\u20ac"], "a":null } ')
    ev = decode_structured(body)
    assert ev.data == b'{ "b" : [1, 2.50, "\\u20ac"], "a":null }'
    assert encode_structured(ev) == ev_json(
        ',"datacontenttype":"application/json","data":{ "b" : [1, 2.50, "\\u20ac"], "a":null }'
    )


@pytest.mark.parametrize(
    "ct", ["Application/JSON", "text/json; charset=utf-8", "image/x+json", "application/vnd.a+json"]
)
def test_json_content_types_case_insensitive(ct: str) -> None:  # edge case 12
    ev = decode_structured(ev_json(f',"datacontenttype":"{ct}","data":[1,2]'))
    assert ev.data == b"[1,2]"
    assert ev.json_data is True
    assert ev.attributes["datacontenttype"] == ct  # verbatim, parameters kept


def test_data_null_is_distinct_from_absent() -> None:  # edge case 11
    with_null = decode_structured(ev_json(',"data":null'))
    absent = decode_structured(ev_json())
    assert with_null.data == b"null" and with_null.json_data is True
    assert absent.data is None
    assert encode_structured(with_null) == ev_json(',"data":null')
    assert encode_structured(absent) == ev_json()


def test_text_data_is_utf8_string() -> None:
    ev = decode_structured(ev_json(',"datacontenttype":"text/plain","data":"Euro € 😀"'))
    assert ev.data == "Euro € 😀".encode()
    assert ev.json_data is False
    assert encode_structured(ev) == ev_json(',"datacontenttype":"text/plain","data":"Euro € 😀"')


def test_xml_data() -> None:
    ev = decode_structured(
        ev_json(',"datacontenttype":"application/xml; charset=utf-8","data":"<much wow=\\"xml\\"/>"')
    )
    assert ev.data == b'<much wow="xml"/>'


def test_non_json_type_requires_string_data() -> None:
    with pytest.raises(InvalidCloudEvent, match="must be a string"):
        decode_structured(ev_json(',"datacontenttype":"text/plain","data":{"a":1}'))


def test_data_base64_with_json_type_decodes_to_bytes() -> None:  # edge case 8
    ev = decode_structured(ev_json(',"datacontenttype":"application/json","data_base64":"eyAieHl6IjogMTIzIH0="'))
    assert ev.data == b'{ "xyz": 123 }'
    assert ev.json_data is False
    assert ev.attributes["datacontenttype"] == "application/json"


def test_data_base64_without_content_type_is_not_json() -> None:  # [main] rule
    ev = decode_structured(ev_json(',"data_base64":"AAEC/w=="'))
    assert ev.data == b"\x00\x01\x02\xff"
    assert ev.json_data is False
    out = encode_structured(ev)
    assert out == ev_json(',"data_base64":"AAEC/w=="')  # no datacontenttype added
    assert b"datacontenttype" not in out


def test_data_base64_null_is_absent_and_empty_is_empty() -> None:
    assert decode_structured(ev_json(',"data_base64":null')).data is None
    assert decode_structured(ev_json(',"data_base64":""')).data == b""


@pytest.mark.parametrize("b64", ['"not base64!"', '"AAE"', "5", '"AA\\nAA=="'])
def test_data_base64_invalid(b64: str) -> None:
    with pytest.raises(InvalidCloudEvent, match="data_base64"):
        decode_structured(ev_json(f',"data_base64":{b64}'))


@pytest.mark.parametrize("extra", [',"data":"x","data_base64":"eA=="', ',"data":null,"data_base64":"eA=="'])
def test_data_and_data_base64_exclusive(extra: str) -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        decode_structured(ev_json(extra))
    assert info.value.reason == "'data' and 'data_base64' are mutually exclusive"


def test_extension_types_kept_and_null_unset() -> None:
    ev = decode_structured(ev_json(',"n":-5,"b":false,"s":"x","gone":null,"subject":null'))
    assert dict(ev.attributes) == {**BASE, "n": -5, "b": False, "s": "x"}
    assert encode_structured(ev) == ev_json(',"n":-5,"b":false,"s":"x"')


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'"x"',
        b"{",
        HEAD.encode(),
        ev_json(","),
        ev_json() + b"x",
        ev_json(',"data":NaN'),
        ev_json(',"data":Infinity'),
        b'{"id":"1",}',
        b"\xff\xfe{}",
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(InvalidCloudEvent):
        decode_structured(body)


def test_duplicate_member_rejected() -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        decode_structured(ev_json(',"id":"2"'))
    assert info.value.field == "id"
    assert info.value.reason == "member appears more than once"


def test_utf8_bom_and_whitespace_tolerated() -> None:
    ev = decode_structured(b"\xef\xbb\xbf \n" + ev_json() + b"\n")
    assert ev.id == "1"


def test_lone_surrogate_escape_rejected() -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        decode_structured(ev_json(',"subject":"\\ud800"'))
    assert info.value.field == "subject"


def test_uppercase_json_key_rejected_not_lowercased() -> None:  # edge case 10
    with pytest.raises(InvalidCloudEvent) as info:
        decode_structured(ev_json(',"MyExtension":"x"'))
    assert info.value.field == "MyExtension"


# --- encoding choices ------------------------------------------------------------------------------


def test_encode_json_bytes_embedded_when_they_parse() -> None:
    ev = make_event({**BASE, "datacontenttype": "application/json"}, b' {"a": 1}\n')
    assert encode_structured(ev) == ev_json(',"datacontenttype":"application/json","data":{"a": 1}')


def test_encode_json_type_with_invalid_json_goes_base64() -> None:
    ev = make_event({**BASE, "datacontenttype": "application/json"}, b"hello")
    out = encode_structured(ev)
    assert out == ev_json(',"datacontenttype":"application/json","data_base64":"aGVsbG8="')
    back = decode_structured(out)
    assert back.data == b"hello"


def test_encode_absent_type_raw_bytes_round_trip() -> None:
    ev = make_event(BASE, b"hello")  # e.g. from a binary HTTP request without Content-Type
    out = encode_structured(ev)
    assert out == ev_json(',"data_base64":"aGVsbG8="')
    assert decode_structured(out).data == b"hello"


def test_encode_binary_and_non_utf8_go_base64() -> None:
    png = make_event({**BASE, "datacontenttype": "image/png"}, b"\x89PNG")
    assert encode_structured(png) == ev_json(',"datacontenttype":"image/png","data_base64":"iVBORw=="')
    latin = make_event({**BASE, "datacontenttype": "text/plain"}, "é".encode("latin-1"))
    assert encode_structured(latin) == ev_json(',"datacontenttype":"text/plain","data_base64":"6Q=="')
    octets = make_event({**BASE, "datacontenttype": "application/octet-stream"}, b"abc")
    assert json.loads(encode_structured(octets))["data_base64"] == "YWJj"
    other_charset = make_event({**BASE, "datacontenttype": "text/plain; charset=iso-8859-1"}, b"abc")
    assert json.loads(encode_structured(other_charset))["data_base64"] == "YWJj"


def test_encode_text_with_control_chars_escaped() -> None:
    ev = make_event({**BASE, "datacontenttype": "text/csv"}, b'a,"b"\n1,2\n')
    out = encode_structured(ev)
    assert out == ev_json(',"datacontenttype":"text/csv","data":"a,\\"b\\"\\n1,2\\n"')
    assert decode_structured(out).data == b'a,"b"\n1,2\n'


def test_encode_output_is_utf8_not_ascii_escaped() -> None:
    ev = make_event({**BASE, "subject": "Euro € 😀"})
    assert encode_structured(ev) == ev_json(',"subject":"Euro € 😀"')


def test_encode_accepts_non_dict_mapping() -> None:
    from types import MappingProxyType

    ev = CloudEvent(MappingProxyType(dict(BASE)), None)
    assert encode_structured(ev) == ev_json()


@pytest.mark.parametrize(
    "body",
    [
        ev_json(',"datacontenttype":"text/plain","data":"x"'),
        ev_json(',"data":{"k":[true,null]}'),
        ev_json(',"data_base64":"AP8="'),
        ev_json(',"datacontenttype":"application/json","data":"I\'m just a string"'),
        ev_json(',"e":2147483647,"f":true'),
    ],
)
def test_structured_round_trip_byte_exact(body: bytes) -> None:
    assert encode_structured(decode_structured(body)) == body


# --- batches ---------------------------------------------------------------------------------------


def test_batch_empty_and_round_trip() -> None:  # edge case 16
    assert decode_batch(b"[]") == []
    assert decode_batch(b" [ \n ] ") == []
    assert encode_batch([]) == b"[]"
    body = b"[" + ev_json(',"data":"a"') + b"," + ev_json(',"datacontenttype":"text/plain","data":"b"') + b"]"
    evs = decode_batch(body)
    assert [e.data for e in evs] == [b'"a"', b"b"]
    assert encode_batch(evs) == body


def test_batch_mixed_specversion_message() -> None:
    body = b"[" + ev_json() + b"," + ev_json().replace(b'"1.0"', b'"0.3"') + b"]"
    with pytest.raises(InvalidCloudEvent) as info:
        decode_batch(body)
    assert info.value.member == 1
    assert info.value.field == "specversion"


@pytest.mark.parametrize("body", [b"{}", b"[1]", b"[null]", b"[" + ev_json() + b",]", b"[" + ev_json(), b"[]x"])
def test_batch_invalid(body: bytes) -> None:
    with pytest.raises(InvalidCloudEvent):
        decode_batch(body)


def test_batch_member_error_names_member() -> None:
    body = b"[" + ev_json() + b"," + ev_json(',"time":"lunchtime"') + b"]"
    with pytest.raises(InvalidCloudEvent) as info:
        decode_batch(body)
    assert str(info.value) == "invalid CloudEvent (batch member 1): attribute 'time': not RFC 3339 ('lunchtime')"


# --- sniffing (header-less NATS) -------------------------------------------------------------------


def test_sniff_structured() -> None:
    assert sniff_structured(ev_json()) is not None
    assert sniff_structured(b'{"a":{"specversion":"1.0"}}') is None  # not top level
    assert sniff_structured(b'["specversion"]') is None
    assert sniff_structured(b"plain text") is None
    assert sniff_structured(b'{"specversion": oops') is None  # not JSON at all: raw
    with pytest.raises(InvalidCloudEvent):
        sniff_structured(b'{"specversion":"1.0"}')  # claims to be a CloudEvent, is not


def test_base64_encoding_standard_alphabet() -> None:
    ev = make_event(BASE, b"\xfb\xff")
    assert json.loads(encode_structured(ev))["data_base64"] == base64.b64encode(b"\xfb\xff").decode() == "+/8="


@pytest.mark.parametrize(
    "data",
    [
        '{"data": {"data": 1}, "x": "\\"data\\": 2"}',  # nested data members and a quoted lookalike
        '[{"data":1},{"data":[1]}]',
        "true",
        "1",
        "1.50",  # verbatim, not re-serialized as 1.5
        '"data"',
        '{"k": "v"}   ',
    ],
)
def test_json_data_span_found_verbatim(data: str) -> None:
    for body in (ev_json(f',"data":{data}'), ev_json(f',"data" : {data},"ext":"data"')):
        assert decode_structured(body).data == data.strip().encode()


def test_json_data_span_with_escaped_member_name_falls_back_to_scan() -> None:
    ev = decode_structured(ev_json(',"d\\u0061ta": [ 1 ]'))
    assert ev.data == b"[ 1 ]" and ev.json_data is True


def test_json_data_span_with_many_nested_data_members() -> None:
    data = "[" + ",".join('{"data":0}' for _ in range(20)) + "]"
    assert decode_structured(ev_json(f',"data":{data}')).data == data.encode()


@pytest.mark.parametrize("ct", [None, "application/json", "application/vnd.api+json"])
def test_whitespace_around_json_data_is_not_kept(ct: str | None) -> None:
    """JSON data is embedded as a JSON value: whitespace around it is insignificant and not kept; the value,
    with the whitespace inside it, is."""
    attrs = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}
    if ct is not None:
        attrs["datacontenttype"] = ct
    body = encode_structured(CloudEvent(attrs, b'\r\n {"a": [1, 2]} \t'))
    assert b'"data":{"a": [1, 2]}}' in body
    assert decode_structured(body).data == b'{"a": [1, 2]}'
