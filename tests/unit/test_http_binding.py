"""HTTP protocol binding (CLOUDEVENTS.md §3; edge cases 1-6, 9, 11-16, 18, 20)."""

from __future__ import annotations

import pytest

from schemas.cloudevent import make_event
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.headers import decode_header_value, encode_header_value
from schemas.http_binding import (
    detect_mode,
    from_http,
    from_http_response,
    is_binary_cloudevent,
    to_batch,
    to_binary,
    to_structured,
)
from schemas.json_format import decode_structured

CE = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "com.example.x"}
BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "com.example.x"}
EURO = "Euro € 😀"
EURO_ENC = "Euro%20%E2%82%AC%20%F0%9F%98%80"


# --- header values ---------------------------------------------------------------------------------


def test_percent_encoding_euro_example() -> None:  # edge case 4, HTTP L272-280
    assert encode_header_value(EURO) == EURO_ENC
    assert decode_header_value(EURO_ENC, "ce-subject") == EURO


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        ("plain", "plain"),
        ("a b", "a%20b"),
        ('say "hi"', "say%20%22hi%22"),
        ("100%", "100%25"),
        ("tab\t", "tab%09"),
        ("~!#$&'()*+,/:;=?@[]", "~!#$&'()*+,/:;=?@[]"),
        ("\x7f", "%7F"),
        ("é", "%C3%A9"),
        ("", ""),
    ],
)
def test_encode_header_value(raw: str, encoded: str) -> None:
    assert encode_header_value(raw) == encoded
    assert decode_header_value(encoded, "ce-x") == raw


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("euro%e2%82%ac", "euro€"),  # lowercase hex accepted
        ("%41%42C", "ABC"),  # needless escapes accepted
        ("%2541", "%41"),  # exactly one round
        ('"a b"', "a b"),  # RFC 7230 quoted-string (edge case 6)
        ('"a \\"q\\" \\\\"', 'a "q" \\'),
        ('"%2541"', "%41"),  # unquote first, then one percent round
        ('""', ""),
        ("raw€", "raw€"),
    ],  # unencoded UTF-8 from lax senders is accepted
)
def test_decode_header_value(value: str, decoded: str) -> None:
    assert decode_header_value(value, "ce-subject") == decoded


@pytest.mark.parametrize("value", ["%C0%A0", "%ED%A0%80", "%FF", "%E2%82", "%c0%a0"])
def test_decode_rejects_invalid_utf8(value: str) -> None:  # edge case 5
    with pytest.raises(InvalidCloudEvent) as info:
        decode_header_value(value, "ce-subject")
    assert info.value.field == "ce-subject"
    assert info.value.location == "header"
    assert str(info.value).startswith("invalid CloudEvent: header 'ce-subject': not valid UTF-8")


@pytest.mark.parametrize("value", ["%", "%4", "%zz", "a%g1", '"unterminated', 'mid"dle', '"a"b"', '"a\\"'])
def test_decode_rejects_malformed(value: str) -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        decode_header_value(value, "ce-x")
    assert info.value.field == "ce-x"


def test_decode_header_fast_path_returns_same_object() -> None:
    value = "com.example.order.created"
    assert decode_header_value(value, "ce-type") is value
    assert encode_header_value(value) is value


# --- mode detection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ct", "mode"),
    [
        (None, "binary"),
        ("application/json", "binary"),
        ("application/cloudevents+json", "structured"),
        ("Application/CloudEvents+JSON; charset=UTF-8", "structured"),
        ("application/cloudevents+avro", "structured"),
        ("application/cloudevents-batch+json", "batch"),
        ("APPLICATION/CLOUDEVENTS-BATCH+JSON", "batch"),
        ("text/plain", "binary"),
    ],
)
def test_detect_mode(ct: str | None, mode: str) -> None:
    assert detect_mode(ct) == mode


def test_is_binary_cloudevent_any_casing() -> None:
    assert is_binary_cloudevent({"CE-SpecVersion": "1.0"})
    assert is_binary_cloudevent({"ce-specversion": "1.0"})
    assert not is_binary_cloudevent({"Content-Type": "text/plain", "ce-id": "1"})


# --- binary receive --------------------------------------------------------------------------------


def test_binary_receive_with_any_header_casing() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "Ce-Id": "1",
        "ce-SOURCE": "/s",
        "CE-TYPE": "com.example.x",
        "CE-MyExt": "v",
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "x",
    }
    [ev] = from_http(headers, b'{"a":1}')
    assert dict(ev.attributes) == {**BASE, "myext": "v", "datacontenttype": "application/json; charset=utf-8"}
    assert ev.data == b'{"a":1}'


def test_binary_receive_all_ce_headers_decoded_once() -> None:
    [ev] = from_http({**CE, "ce-subject": EURO_ENC, "ce-other": "%2541", "ce-q": '"a b"'}, b"")
    assert ev.attributes["subject"] == EURO
    assert ev.attributes["other"] == "%41"
    assert ev.attributes["q"] == "a b"


def test_binary_missing_specversion_rejected() -> None:  # edge case 1
    headers = {k: v for k, v in CE.items() if k != "ce-specversion"}
    with pytest.raises(InvalidCloudEvent) as info:
        from_http(headers, b"x")
    assert info.value.field == "ce-specversion"


def test_binary_missing_id_rejected_not_generated() -> None:  # edge case 2
    headers = {k: v for k, v in CE.items() if k != "ce-id"}
    with pytest.raises(InvalidCloudEvent) as info:
        from_http(headers, b"x")
    assert info.value.field == "id"


@pytest.mark.parametrize("header", ["ce-id", "ce-subject", "ce-dataschema"])
def test_binary_empty_values_rejected(header: str) -> None:  # edge case 3
    with pytest.raises(InvalidCloudEvent):
        from_http({**CE, header: ""}, b"")


def test_binary_invalid_utf8_header_rejected() -> None:  # edge case 5
    with pytest.raises(InvalidCloudEvent) as info:
        from_http({**CE, "ce-subject": "%C0%A0"}, b"")
    assert info.value.field == "ce-subject"


def test_binary_invalid_extension_name_rejected() -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        from_http({**CE, "ce-my-ext": "x"}, b"")
    assert info.value.field == "my-ext"


def test_binary_invalid_time_rejected() -> None:  # edge case 7
    with pytest.raises(InvalidCloudEvent) as info:
        from_http({**CE, "ce-time": "2018-04-05T18:31Z"}, b"")
    assert info.value.reason == "not RFC 3339 ('2018-04-05T18:31Z' has no seconds)"


def test_binary_duplicate_header_rejected() -> None:
    with pytest.raises(InvalidCloudEvent, match="more than once"):
        from_http({**CE, "CE-ID": "2"}, b"")


def test_binary_empty_body_no_content_type_means_no_data() -> None:  # edge case 11
    [ev] = from_http(CE, b"")
    assert ev.data is None
    assert "datacontenttype" not in ev.attributes
    [ev] = from_http({**CE, "Content-Type": "text/plain"}, b"")
    assert ev.data == b""
    [ev] = from_http(CE, b"raw")
    assert ev.data == b"raw" and "datacontenttype" not in ev.attributes


def test_binary_content_type_kept_verbatim() -> None:  # edge case 12
    [ev] = from_http({**CE, "content-type": "TEXT/Plain; CharSet=utf-8"}, b"x")
    assert ev.attributes["datacontenttype"] == "TEXT/Plain; CharSet=utf-8"


def test_binary_content_type_with_ce_datacontenttype_rejected() -> None:  # edge case 15
    with pytest.raises(InvalidCloudEvent) as info:
        from_http({**CE, "Content-Type": "application/json", "ce-datacontenttype": "application/json"}, b"{}")
    assert info.value.field == "ce-datacontenttype"


def test_binary_invalid_content_type_rejected() -> None:  # edge case 15
    with pytest.raises(InvalidCloudEvent) as info:
        from_http({**CE, "Content-Type": "xyz"}, b"x")
    assert info.value.field == "datacontenttype"


def test_binary_types_are_strings() -> None:  # edge case 14: binary mode loses extension types
    [ev] = from_http({**CE, "ce-n": "5", "ce-b": "true"}, b"")
    assert ev.attributes["n"] == "5" and ev.attributes["b"] == "true"


def test_binary_invents_nothing() -> None:  # edge case 20
    [ev] = from_http(CE, b"")
    assert dict(ev.attributes) == BASE


class FakeCIMultiDict:
    """Behaves like aiohttp's CIMultiDictProxy: case-insensitive get, items() with repeats."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self._items:
            if k.lower() == key.lower():
                return v
        return default

    def __getitem__(self, key: str) -> str:
        v = self.get(key)
        if v is None:
            raise KeyError(key)
        return v

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)


def test_multidict_headers_and_repeated_header() -> None:
    md = FakeCIMultiDict(
        [
            ("Ce-Specversion", "1.0"),
            ("Ce-Id", "1"),
            ("Ce-Source", "/s"),
            ("Ce-Type", "t"),
            ("Content-Type", "text/plain"),
        ]
    )
    [ev] = from_http(md, b"hi")  # type: ignore[arg-type]
    assert dict(ev.attributes) == {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "t",
        "datacontenttype": "text/plain",
    }
    repeated = FakeCIMultiDict([*md.items(), ("ce-id", "2")])
    with pytest.raises(InvalidCloudEvent, match="more than once"):
        from_http(repeated, b"hi")  # type: ignore[arg-type]


# --- structured / batch receive --------------------------------------------------------------------

STRUCT = b'{"specversion":"1.0","id":"1","source":"/s","type":"com.example.x","data":"I\'m just a string"}'


def test_structured_receive() -> None:
    [ev] = from_http({"Content-Type": "application/cloudevents+json; charset=UTF-8"}, STRUCT)
    assert ev.data == b'"I\'m just a string"'


def test_structured_with_ce_headers_is_structured() -> None:  # edge case 13
    headers = {"content-type": "Application/CloudEvents+JSON", "ce-id": "other", "ce-bogus-name": "%C0%A0"}
    [ev] = from_http(headers, STRUCT)
    assert ev.id == "1"  # the payload wins; ce- headers are not read
    assert "bogus-name" not in ev.attributes


def test_structured_unknown_format_unsupported() -> None:  # edge case 18
    with pytest.raises(UnsupportedFormat) as info:
        from_http({"Content-Type": "application/cloudevents+avro"}, b"\x00")
    assert info.value.content_type == "application/cloudevents+avro"
    with pytest.raises(UnsupportedFormat):
        from_http({"Content-Type": "application/cloudevents-batch+avro"}, b"\x00")


def test_structured_invalid_is_invalid() -> None:
    with pytest.raises(InvalidCloudEvent):
        from_http({"Content-Type": "application/cloudevents+json"}, b'{"specversion":"1.0"}')


def test_batch_receive() -> None:  # edge case 16
    ct = {"Content-Type": "application/cloudevents-batch+json"}
    assert from_http(ct, b"[]") == []
    evs = from_http(ct, b"[" + STRUCT + b"," + STRUCT.replace(b'"id":"1"', b'"id":"2"') + b"]")
    assert [e.id for e in evs] == ["1", "2"]


# --- send ------------------------------------------------------------------------------------------


def test_to_binary_headers() -> None:  # edge cases 4, 14
    ev = make_event(
        {**BASE, "subject": EURO, "extbool": True, "extint": -7, "datacontenttype": "text/plain"}, b"x"
    )
    headers, body = to_binary(ev)
    assert headers == {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "com.example.x",
        "ce-subject": EURO_ENC,
        "ce-extbool": "true",
        "ce-extint": "-7",
        "Content-Type": "text/plain",
    }
    assert body == b"x"
    assert "ce-datacontenttype" not in headers


def test_to_binary_no_data_empty_body_no_content_type() -> None:
    headers, body = to_binary(make_event(BASE))
    assert body == b"" and "Content-Type" not in headers
    [ev] = from_http(headers, body)
    assert ev.data is None and dict(ev.attributes) == BASE


def test_just_a_string_structured_to_binary_quoted() -> None:  # edge case 9, JSON L314-349
    ev = decode_structured(STRUCT)
    headers, body = to_binary(ev)
    assert body == b'"I\'m just a string"'
    assert headers["Content-Type"] == "application/json"  # implied type set explicitly (JSON L197-205)
    [back] = from_http(headers, body)
    assert back.data == b'"I\'m just a string"'
    assert dict(back.attributes) == {**BASE, "datacontenttype": "application/json"}
    _, structured = to_structured(back)
    assert structured == (
        b'{"specversion":"1.0","id":"1","source":"/s","type":"com.example.x",'
        b'"datacontenttype":"application/json","data":"I\'m just a string"}'
    )


def test_data_base64_json_to_binary_body() -> None:  # edge case 8
    ev = decode_structured(
        b'{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json",'
        b'"data_base64":"eyAieHl6IjogMTIzIH0="}'
    )
    headers, body = to_binary(ev)
    assert body == b'{ "xyz": 123 }'
    assert headers["Content-Type"] == "application/json"


def test_round_trip_binary_structured_binary_euro() -> None:
    headers = {
        **CE,
        "ce-subject": EURO_ENC,
        "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "Content-Type": "text/plain; charset=utf-8",
    }
    [ev] = from_http(headers, EURO.encode())
    s_headers, s_body = to_structured(ev)
    assert s_headers == {"Content-Type": "application/cloudevents+json; charset=utf-8"}
    assert (
        s_body
        == (
            '{"specversion":"1.0","id":"1","source":"/s","type":"com.example.x","subject":"Euro € 😀",'
            '"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",'
            '"datacontenttype":"text/plain; charset=utf-8","data":"Euro € 😀"}'
        ).encode()
    )
    [ev2] = from_http(s_headers, s_body)
    assert ev2 == ev
    b_headers, b_body = to_binary(ev2)
    assert b_body == EURO.encode()
    assert {k.lower(): v for k, v in b_headers.items()} == {k.lower(): v for k, v in headers.items()}


def test_round_trip_structured_binary_structured_types_become_strings() -> None:  # edge case 14
    body = (
        b'{"specversion":"1.0","id":"1","source":"/s","type":"t","n":5,"b":true,'
        b'"datacontenttype":"text/plain","data":"x"}'
    )
    [ev] = from_http({"Content-Type": "application/cloudevents+json"}, body)
    headers, data = to_binary(ev)
    assert headers["ce-n"] == "5" and headers["ce-b"] == "true"
    [back] = from_http(headers, data)
    assert back.attributes["n"] == "5" and back.attributes["b"] == "true"
    assert to_structured(back)[1] == body.replace(b'"n":5,"b":true', b'"n":"5","b":"true"')


def test_to_batch() -> None:
    ev = make_event(BASE)
    headers, body = to_batch([ev, ev])
    assert headers == {"Content-Type": "application/cloudevents-batch+json; charset=utf-8"}
    assert from_http(headers, body) == [ev, ev]
    assert to_batch([])[1] == b"[]"


# --- responses -------------------------------------------------------------------------------------


def test_response_plain_is_none() -> None:
    assert from_http_response({"Content-Type": "application/json"}, b'{"ok":true}') is None
    assert from_http_response({}, b"") is None


def test_response_binary_and_structured() -> None:
    ev = from_http_response({**CE, "Content-Type": "application/json"}, b"{}")
    assert ev is not None and ev.data == b"{}" and ev.attributes["datacontenttype"] == "application/json"
    ev = from_http_response({"content-type": "application/cloudevents+json"}, STRUCT)
    assert ev is not None and ev.id == "1"


def test_response_invalid_and_batch_raise() -> None:
    with pytest.raises(InvalidCloudEvent):
        from_http_response({"ce-specversion": "1.0"}, b"")
    with pytest.raises(UnsupportedFormat):
        from_http_response({"Content-Type": "application/cloudevents-batch+json"}, b"[]")
