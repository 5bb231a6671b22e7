"""The CloudEvents JSON event format (`application/cloudevents+json`) and its batch format.

Decoding keeps JSON `data` byte-exact: the event's `data` is the verbatim JSON text of the `data` member
(parsed once, for validation only), so `"data":"I'm just a string"` becomes the bytes `"I'm just a string"`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import Any, NoReturn

from schemas.cloudevent import (
    AttributeValue,
    CloudEvent,
    is_json_content_type,
    is_text_content_type,
    validate_attributes,
)
from schemas.errors import InvalidCloudEvent

CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json; charset=utf-8"
MEDIA_TYPE = "application/cloudevents+json"
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


class _Object(dict[str, Any]):
    """A decoded JSON object that remembers whether its text repeated a member name."""

    __slots__ = ("repeated",)
    repeated: bool


def _object_pairs(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.repeated = len(obj) != len(pairs)
    return obj


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
# Fast path for single events: the C parser, with repeated member names detected by the hook.
_FAST_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_object_pairs)
_MAX_DATA_PROBES = 8
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_WS = re.compile(r"[ \t\n\r]+")


def _ws(s: str, idx: int) -> int:
    """Index of the first non-whitespace character at or after `idx`."""
    m = _WS.match(s, idx)
    return idx if m is None else m.end()


def _text(body: bytes) -> str:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCloudEvent(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def _bad_json(msg: str, pos: int) -> InvalidCloudEvent:
    return InvalidCloudEvent(f"body is not valid JSON: {msg} at char {pos}")


def _value(s: str, idx: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(s, idx)
    except json.JSONDecodeError as exc:
        raise _bad_json(exc.msg, exc.pos) from exc
    except (ValueError, RecursionError) as exc:
        raise _bad_json(str(exc), idx) from exc


def _scan_object(s: str, idx: int) -> tuple[dict[str, Any], tuple[int, int] | None, int]:
    """Parse the JSON object at `s[idx]` (a `{`): its members, the span of a `data` member, the end index."""
    members: dict[str, Any] = {}
    data_span: tuple[int, int] | None = None
    idx = _ws(s, idx + 1)
    if s.startswith("}", idx):
        return members, None, idx + 1
    while True:
        if not s.startswith('"', idx):
            raise _bad_json("expecting a member name", idx)
        key, idx = _value(s, idx)
        idx = _ws(s, idx)
        if not s.startswith(":", idx):
            raise _bad_json("expecting ':'", idx)
        idx = _ws(s, idx + 1)
        start = idx
        value, idx = _value(s, idx)
        if key in members:
            raise InvalidCloudEvent("member appears more than once", key)
        members[key] = value
        if key == "data":
            data_span = (start, idx)
        idx = _ws(s, idx)
        if s.startswith(",", idx):
            idx = _ws(s, idx + 1)
        elif s.startswith("}", idx):
            return members, data_span, idx + 1
        else:
            raise _bad_json("expecting ',' or '}'", idx)


def _build(s: str, members: dict[str, Any], data_span: tuple[int, int] | None) -> CloudEvent:
    attrs: dict[str, AttributeValue] = {}
    for key, value in members.items():
        if value is None or key == "data" or key == "data_base64":
            continue  # null = unset; data handled below
        if isinstance(value, float):
            raise InvalidCloudEvent(f"number {value!r} is not a CloudEvents Integer", key)
        attrs[key] = value
    validate_attributes(attrs)
    data: bytes | None = None
    json_data = False
    b64 = members.get("data_base64")
    if b64 is not None:
        if "data" in members:
            raise InvalidCloudEvent("'data' and 'data_base64' are mutually exclusive")
        if not isinstance(b64, str):
            raise InvalidCloudEvent("'data_base64' must be a base64 string")
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidCloudEvent(f"'data_base64' is not valid base64 ({exc})") from exc
    elif "data" in members:
        ct = attrs.get("datacontenttype")
        assert ct is None or isinstance(ct, str)
        if is_json_content_type(ct):
            if data_span is None:
                data_span = _find_data_span(s, members["data"])
            data = s[data_span[0] : data_span[1]].encode("utf-8")
            json_data = True
        else:
            value = members["data"]
            if isinstance(value, str):
                try:
                    data = value.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise InvalidCloudEvent("'data' contains a lone surrogate") from exc
            elif value is not None:
                raise InvalidCloudEvent(f"'data' must be a string for content type {ct!r}")
    return CloudEvent(attrs, data, json_data)


def _find_data_span(s: str, value: Any) -> tuple[int, int]:
    """Where the text of the top-level `data` member (whose parsed value is `value`) is in `s`.

    Probes occurrences of `"data":` from the end (the member is usually last) and accepts the first whose
    value parses equal to `value`. Only the top-level member can: the token cannot occur inside a string,
    a nested member cannot equal the value containing it, and other top-level names are validated. When
    the probes fail (escaped member name, many nested `data` members) the object is scanned in full.
    """
    end = len(s)
    for _ in range(_MAX_DATA_PROBES):
        i = s.rfind('"data"', 0, end)
        if i < 0:
            break
        j = _ws(s, i + 6)
        if s.startswith(":", j):
            k = _ws(s, j + 1)
            try:
                found, e = _DECODER.raw_decode(s, k)
            except (ValueError, RecursionError):
                pass
            else:
                if found == value and (type(found) is type(value) or isinstance(value, dict)):
                    return k, e
        end = i
    _, span, _ = _scan_object(s, _ws(s, 0))
    assert span is not None
    return span


def decode_structured(body: bytes) -> CloudEvent:
    """Decode one JSON-format CloudEvent. Raises InvalidCloudEvent."""
    s = _text(body)
    try:
        obj = _FAST_DECODER.decode(s)
    except (ValueError, RecursionError):
        obj = None  # the scanner below reports the error precisely
    if isinstance(obj, _Object) and not obj.repeated:
        return _build(s, obj, None)
    idx = _ws(s, 0)
    if not s.startswith("{", idx):
        raise InvalidCloudEvent("a structured CloudEvent must be a JSON object")
    members, span, idx = _scan_object(s, idx)
    if _ws(s, idx) != len(s):
        raise _bad_json("extra data after the object", idx)
    return _build(s, members, span)


def sniff_structured(body: bytes) -> CloudEvent | None:
    """Decode `body` if it is a JSON object with a top-level `specversion` member, else None.

    For transports that cannot say "this is a CloudEvent" (header-less NATS). Parses once; an object with
    `specversion` that is not a valid CloudEvent raises InvalidCloudEvent.
    """
    if b'"specversion"' not in body:
        return None
    try:
        s = _text(body)
        idx = _ws(s, 0)
        if not s.startswith("{", idx):
            return None
        members, span, idx = _scan_object(s, idx)
        if _ws(s, idx) != len(s):
            return None
    except InvalidCloudEvent:
        return None
    if "specversion" not in members:
        return None
    return _build(s, members, span)


def decode_batch(body: bytes) -> list[CloudEvent]:
    """Decode a JSON batch: `[]` is valid, all members must share one specversion.

    Raises InvalidCloudEvent (with `.member` set when a member is at fault)."""
    s = _text(body)
    idx = _ws(s, 0)
    if not s.startswith("[", idx):
        raise InvalidCloudEvent("a CloudEvents batch must be a JSON array")
    events: list[CloudEvent] = []
    idx = _ws(s, idx + 1)
    if s.startswith("]", idx):
        idx += 1
    else:
        while True:
            member = len(events)
            if not s.startswith("{", idx):
                _value(s, idx)  # a JSON syntax error wins over "not an object"
                raise InvalidCloudEvent("batch member is not a JSON object", member=member)
            try:
                members, span, idx = _scan_object(s, idx)
                ev = _build(s, members, span)
            except InvalidCloudEvent as exc:
                raise exc.in_member(member) from exc
            if events and ev.attributes["specversion"] != events[0].attributes["specversion"]:
                raise InvalidCloudEvent(
                    "all events of a batch must share one specversion", "specversion", member=member
                )
            events.append(ev)
            idx = _ws(s, idx)
            if s.startswith(",", idx):
                idx = _ws(s, idx + 1)
            elif s.startswith("]", idx):
                idx += 1
                break
            else:
                raise _bad_json("expecting ',' or ']'", idx)
    if _ws(s, idx) != len(s):
        raise _bad_json("extra data after the array", idx)
    return events


def _is_json_text(data: bytes) -> bool:
    try:
        _DECODER.decode(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return True


def _encode_one(ev: CloudEvent) -> bytes:
    attrs = ev.attributes
    head = _ENCODER.encode(attrs if isinstance(attrs, dict) else dict(attrs)).encode("utf-8")
    data = ev.data
    if data is None:
        return head
    ct = attrs.get("datacontenttype")
    ct = None if ct is None else str(ct)
    if is_json_content_type(ct):
        if ev.json_data or _is_json_text(data):
            return head[:-1] + b',"data":' + data.strip(b" \t\r\n") + b"}"
    elif is_text_content_type(ct):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return head[:-1] + b',"data":' + _ENCODER.encode(text).encode("utf-8") + b"}"
    return head[:-1] + b',"data_base64":"' + base64.b64encode(data) + b'"}'


def encode_structured(ev: CloudEvent) -> bytes:
    """Encode one event in the JSON format (UTF-8). JSON data is embedded as a JSON value, UTF-8 text of a
    textual type as a string, anything else as `data_base64`."""
    return _encode_one(ev)


def encode_batch(evs: Iterable[CloudEvent]) -> bytes:
    """Encode events as a JSON batch (`[]` when empty)."""
    return b"[" + b",".join(_encode_one(ev) for ev in evs) + b"]"
