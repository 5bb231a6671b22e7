"""The CloudEvents Kafka protocol binding (v1.0.2): binary (`ce_` headers) and structured modes.

Headers are aiokafka's `Sequence[tuple[str, bytes]]`; values are UTF-8 with no percent-encoding. The record
key is never mapped onto `partitionkey` on receive (only raw records are wrapped with it).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from schemas.cloudevent import (
    SPECVERSION,
    AttributeValue,
    CloudEvent,
    canonical_string,
    check_attribute,
    format_time,
    is_media_type,
    is_valid_string,
    make_event,
    validate_attributes,
)
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.json_format import (
    BATCH_MEDIA_TYPE,
    CONTENT_TYPE,
    MEDIA_TYPE,
    decode_structured,
    encode_structured,
)

KafkaHeaders = Sequence[tuple[str, bytes | None]]
MAX_TIMESTAMP_MS = int(datetime(9999, 12, 31, 23, 59, 59, 999000, UTC).timestamp() * 1000) + 1
"""Record timestamps at or after this (year 10000) have no RFC 3339 form: such a record gets no `time`."""


def _utf8(value: bytes | None, header: str) -> str:
    if value is None:
        raise InvalidCloudEvent("header has a null value", header, location="header")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCloudEvent(
            f"value is not valid UTF-8 ({exc.reason} at byte {exc.start})", header, location="header"
        ) from exc


# What `_from_kafka_careful` learnt about header keys it decoded a valid binary-mode event from: the attribute
# each key carries ("" for a key the binding ignores) and its binary-mode HTTP header name. Bounded: the keys
# come from producers.
_ATTRIBUTE: dict[str, str] = {}
_HTTP_NAME: dict[str, str] = {}
_BINARY_TYPES: set[str] = set()
"""`content-type` values seen on valid binary-mode events (valid media types, not a structured mode)."""
_MAX_KNOWN = 4096


def from_kafka(headers: KafkaHeaders, value: bytes | None) -> CloudEvent | None:
    """Decode a Kafka record that is a CloudEvent; None for a raw record (neither binary nor structured).

    Structured when `content-type` starts with `application/cloudevents` (any case); `application/cloudevents
    +json` is decoded, other formats (and batches, which Kafka does not define) raise UnsupportedFormat.
    Invalid CloudEvents raise InvalidCloudEvent.

    The common record takes a fast path, a few steps per header and its values checked in one pass: a
    binary-mode event whose header keys `_from_kafka_careful` has decoded a valid event from before, whose
    values are non-empty printable ASCII and whose `content-type` is a media type seen valid before; its
    binary-mode HTTP headers are built on the way when no value needs percent-encoding. Anything else (a new
    key, a fault, a value that needs a closer look) takes the careful path, which gives the same event or the
    precise error. The fast path allocates little: every container made per event brings the next garbage
    collection closer.
    """
    if not headers:
        return _from_kafka_careful(headers, value)
    attrs: dict[str, str] = {}
    http: dict[str, str] = {}
    names = _ATTRIBUTE
    http_names = _HTTP_NAME
    ignored = 0
    try:
        for key, raw in headers:
            name = names[key]  # KeyError: a key not seen before
            if name:
                # AttributeError (a null value) or UnicodeDecodeError: the careful path says which
                attrs[name] = http[http_names[key]] = raw.decode()  # type: ignore[union-attr]
            else:
                ignored += 1  # a header the binding ignores, whatever its value
    except (KeyError, AttributeError, TypeError, ValueError):
        return _from_kafka_careful(headers, value)
    values = attrs.values()
    blob = "".join(values)
    if (len(attrs) + ignored != len(headers)  # an attribute given twice (`content-type` with `ce_datacontenttype`)
            or "" in values or attrs.get("specversion") != SPECVERSION
            or "id" not in attrs or "source" not in attrs or "type" not in attrs
            or not (blob.isascii() and blob.isprintable())):
        return _from_kafka_careful(headers, value)
    content_type = attrs.get("datacontenttype")
    if content_type is not None and content_type not in _BINARY_TYPES:
        return _from_kafka_careful(headers, value)
    if "time" in attrs or "dataschema" in attrs:
        try:  # the two formats that vary per event
            for name in ("time", "dataschema"):
                if name in attrs:
                    check_attribute(name, attrs[name])
        except InvalidCloudEvent:
            return _from_kafka_careful(headers, value)
    if " " in blob or '"' in blob or "%" in blob:
        return CloudEvent(attrs, value)
    return CloudEvent(attrs, value, http_headers=http)


def _structured(content_type: str) -> bool:
    """Whether a `content-type` header marks a structured-mode record (`application/cloudevents...`, any case)."""
    return content_type.lstrip().lower().startswith("application/cloudevents")


def _learn(headers: KafkaHeaders, content_type: str | None) -> None:
    """Remember the header keys of a valid binary-mode event (and its content type) for the fast path."""
    if len(_ATTRIBUTE) >= _MAX_KNOWN:
        return
    for key, _ in headers:
        if key.startswith("ce_"):
            _ATTRIBUTE[key] = name = key[3:]
            _HTTP_NAME[key] = "ce-" + name
        elif key.lower() == "content-type":
            _ATTRIBUTE[key] = "datacontenttype"
            _HTTP_NAME[key] = "Content-Type"
        else:
            _ATTRIBUTE[key] = _HTTP_NAME[key] = ""
    if content_type is not None and len(_BINARY_TYPES) < _MAX_KNOWN and not _structured(content_type):
        _BINARY_TYPES.add(content_type)  # as a `content-type` header, this one would mean structured mode


def _from_kafka_careful(headers: KafkaHeaders, value: bytes | None) -> CloudEvent | None:
    """`from_kafka` one header at a time, with the precise error for any fault."""
    content_type: str | None = None
    attrs: dict[str, AttributeValue] = {}
    bad: tuple[str, bytes | None] | None = None  # the first unusable `ce_` header (repeated, null or not UTF-8)
    for key, raw in headers or ():  # one pass: the CloudEvents headers, and the content-type (any case)
        if key.startswith("ce_"):
            name = key[3:]
            if bad is not None:
                continue
            if name in attrs or raw is None:
                bad = (key, raw)
                continue
            try:
                attrs[name] = raw.decode()  # UTF-8 (the default: no codec name to parse per header)
            except UnicodeDecodeError:
                bad = (key, raw)
        elif raw is not None and key.lower() == "content-type":
            if content_type is not None:
                raise InvalidCloudEvent("header appears more than once", key, location="header")
            content_type = _utf8(raw, key)
    if content_type is not None and _structured(content_type):
        media_type = content_type.partition(";")[0].strip().lower()
        if media_type == BATCH_MEDIA_TYPE:
            raise UnsupportedFormat(content_type, "the Kafka binding has no batch mode")
        if media_type != MEDIA_TYPE:
            raise UnsupportedFormat(content_type)
        if value is None:
            raise InvalidCloudEvent("structured-mode record has no value")
        return decode_structured(value)  # structured: `ce_` headers play no part, whatever they hold
    if bad is not None:  # binary mode: the first unusable `ce_` header is the error, as in header order
        key, raw = bad
        if key[3:] in attrs:  # nothing is decoded after the first bad header: only a repeat can be in attrs
            raise InvalidCloudEvent("header appears more than once", key, location="header")
        _utf8(raw, key)  # raises the precise reason (null or not UTF-8)
    if "specversion" not in attrs:
        return None
    if content_type is not None:
        dct = attrs.get("datacontenttype")
        if dct is not None and dct != content_type:
            raise InvalidCloudEvent(
                f"differs from the content-type header {content_type!r}",
                "ce_datacontenttype",
                location="header",
            )
        attrs["datacontenttype"] = content_type
    validate_attributes(attrs)
    dct = attrs.get("datacontenttype")
    _learn(headers, dct if isinstance(dct, str) else None)
    return CloudEvent(attrs, value)


def wrap_kafka_record(
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    headers: KafkaHeaders,
    value: bytes | None,
    event_type: str,
    event_source: str,
) -> CloudEvent:
    """A CloudEvent for a raw (non-CloudEvents) record; deterministic id `<topic>/<partition>/<offset>`.

    `time` from the record timestamp (UTC, milliseconds; omitted when absent, negative or after year 9999, which
    a producer may set: RFC 3339 cannot write it), `partitionkey` from
    a non-empty UTF-8 key, `datacontenttype` from a valid `content-type` header, data = the value bytes.
    Raises InvalidCloudEvent if `event_type`/`event_source` are not valid.
    """
    attrs: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": f"{topic}/{partition}/{offset}",
        "source": event_source,
        "type": event_type,
    }
    if timestamp_ms is not None and 0 <= timestamp_ms < MAX_TIMESTAMP_MS:
        seconds, millis = divmod(timestamp_ms, 1000)
        at = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
        attrs["time"] = format_time(at, digits=3)
    content_type = None
    for hkey, hvalue in headers or ():
        if hkey.lower() == "content-type" and hvalue is not None:
            try:
                content_type = hvalue.decode("utf-8")
            except UnicodeDecodeError:
                content_type = None
    if content_type is not None and is_media_type(content_type):
        attrs["datacontenttype"] = content_type
    if key:
        try:
            partitionkey = key.decode("utf-8")
        except UnicodeDecodeError:
            partitionkey = ""
        if partitionkey and is_valid_string(partitionkey):
            attrs["partitionkey"] = partitionkey
    return make_event(attrs, value)


def to_kafka_binary(ev: CloudEvent) -> tuple[list[tuple[str, bytes]], bytes | None]:
    """Binary mode: every attribute as a `ce_<name>` header (canonical string, UTF-8), `partitionkey`
    included; `datacontenttype` as `content-type`. The value is the data (None when there is none)."""
    headers: list[tuple[str, bytes]] = []
    for name, value in ev.attributes.items():
        if name == "datacontenttype":
            headers.append(("content-type", str(value).encode("utf-8")))
        else:
            headers.append(("ce_" + name, canonical_string(value).encode("utf-8")))
    if ev.json_data and "datacontenttype" not in ev.attributes:
        headers.append(("content-type", b"application/json"))
    return headers, ev.data


def to_kafka_structured(ev: CloudEvent) -> tuple[list[tuple[str, bytes]], bytes]:
    """Structured mode: `content-type: application/cloudevents+json; charset=utf-8` and the JSON event."""
    return [("content-type", CONTENT_TYPE.encode("ascii"))], encode_structured(ev)


def kafka_key(ev: CloudEvent) -> bytes | None:
    """The record key for `ev` (opt-in key mapper): `partitionkey` as UTF-8, or None."""
    pk = ev.attributes.get("partitionkey")
    return None if pk is None else canonical_string(pk).encode("utf-8")
