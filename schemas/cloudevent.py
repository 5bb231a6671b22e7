"""The CloudEvent as eventbus carries it: attributes plus the data bytes, never re-encoded in transit."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache

from schemas.errors import InvalidCloudEvent

AttributeValue = str | int | bool
"""Canonical CloudEvents attribute types we keep:
String-like values as str, Integer as int, Boolean as bool."""

REQUIRED = ("id", "source", "specversion", "type")
KNOWN = frozenset({*REQUIRED, "datacontenttype", "dataschema", "subject", "time"})


@dataclass(slots=True)
class CloudEvent:
    """A CloudEvent: context attributes (extensions included, `data` excluded) and the data as bytes.

    Treated as immutable (`with_attributes` copies) but not frozen: a frozen dataclass costs ~1.3 µs more
    to build, and one is built for every event on the dispatch path.

    `data` is exactly the bytes a binary-mode message would carry as its body, so forwarding never
    decodes and re-encodes them. `None` means the event has no data (distinct from empty bytes only
    on bindings that can tell them apart).
    """

    attributes: Mapping[str, AttributeValue]
    data: bytes | None = None
    # Set when the event came from a JSON-format message whose `data` was JSON: the original JSON
    # text of `data`, so structured re-encoding can embed it verbatim.
    json_data: bool = field(default=False, compare=False)
    # The binary-mode HTTP headers of exactly these attributes, when the decoder built them on its way (values
    # that need no percent-encoding): `to_binary` sends a copy instead of encoding again. Set by decoders
    # only; any changed copy (`with_attributes`) has none.
    http_headers: Mapping[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return str(self.attributes["id"])

    @property
    def source(self) -> str:
        return str(self.attributes["source"])

    @property
    def type(self) -> str:
        return str(self.attributes["type"])

    @property
    def specversion(self) -> str:
        return str(self.attributes["specversion"])

    @property
    def datacontenttype(self) -> str | None:
        v = self.attributes.get("datacontenttype")
        return None if v is None else str(v)

    def get(self, name: str) -> AttributeValue | None:
        return self.attributes.get(name)

    def with_attributes(self, **extra: AttributeValue) -> CloudEvent:
        """A copy with attributes added or replaced (used for dead-letter and reply annotations)."""
        attrs = dict(self.attributes)
        attrs.update(extra)
        return CloudEvent(attrs, self.data, self.json_data)  # no `http_headers`: they would be stale


def canonical_string(value: AttributeValue) -> str:
    """The canonical string encoding of an attribute value (CloudEvents type system)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- validation (CloudEvents v1.0.2 core rules; see /work/shared/CLOUDEVENTS.md §1) ------------------------

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
SPECVERSION = "1.0"

_NAME_RE = re.compile(r"[a-z0-9]+")
# RFC 2045 token: ASCII 0x21-0x7E except tspecials ()<>@,;:\"/[]?=
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t !-~])*"'
_MEDIA_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*")
_ABSOLUTE_URI_RE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.\-]*:(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*"
)
_TIME_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_TIME_NO_SECONDS_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}(?:[Zz]|[+-]\d{2}:\d{2})?", re.ASCII)
_TIME_NO_ZONE_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?", re.ASCII)
# Characters a CloudEvents String must not contain: controls, Unicode noncharacters, lone surrogates.
_BAD_STRING_RE = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
    + "".join(f"{chr(p * 0x10000 + 0xFFFE)}{chr(p * 0x10000 + 0xFFFF)}" for p in range(17))
    + "]"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _string_problem(value: str) -> str | None:
    """Why `value` is not a valid CloudEvents String, or None. Fast path for printable ASCII."""
    if value.isascii() and value.isprintable():
        return None
    bad = _BAD_STRING_RE.search(value)
    if bad is None:
        return None
    return f"contains a forbidden character U+{ord(bad.group()):04X} at position {bad.start()}"


def is_valid_string(value: str) -> bool:
    """Whether `value` is a valid CloudEvents String (no controls, noncharacters or lone surrogates)."""
    return _string_problem(value) is None


def replace_forbidden(value: str, replacement: str = " ") -> str:
    """`value` with every character a CloudEvents String forbids replaced by `replacement`."""
    return value if _string_problem(value) is None else _BAD_STRING_RE.sub(replacement, value)


def _check_string(name: str, value: AttributeValue, *, non_empty: bool) -> str:
    if not isinstance(value, str):
        raise InvalidCloudEvent(f"must be a String, got {_type_name(value)}", name)
    if non_empty and not value:
        raise InvalidCloudEvent("must be a non-empty String", name)
    problem = _string_problem(value)
    if problem is not None:
        raise InvalidCloudEvent(problem, name)
    return value


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if value is None:
        return "null"
    return type(value).__name__


@lru_cache(maxsize=1024)
def is_media_type(value: str) -> bool:
    """Whether `value` is an RFC 2046 media type (`type/subtype` plus optional parameters)."""
    return _MEDIA_TYPE_RE.fullmatch(value) is not None


@lru_cache(maxsize=1024)
def _content_type_kind(content_type: str) -> tuple[bool, bool, str]:
    """(is JSON, is text, charset) for a media type; parameters stripped and case-insensitive."""
    essence, _, params = content_type.partition(";")
    essence = essence.strip().lower()
    is_json = essence.endswith("/json") or essence.endswith("+json")
    charset = ""
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip('"').lower()
    is_text = (
        essence.startswith("text/")
        or essence.endswith("/xml")
        or essence.endswith("+xml")
        or essence in ("application/x-www-form-urlencoded", "application/javascript", "application/yaml")
        or bool(charset)
    )
    return is_json, is_text, charset


def is_json_content_type(content_type: str | None) -> bool:
    """JSON rule of the JSON format: absent, `*/json` or `*/*+json` (parameters stripped, any case)."""
    if content_type is None:
        return True
    return _content_type_kind(content_type)[0]


def is_text_content_type(content_type: str | None) -> bool:
    """Whether data of this (non-JSON) type is UTF-8 text we may write as a JSON string.

    `text/*`, XML types, a few textual application types, or any type with a UTF-8/US-ASCII charset.
    A type declaring another charset is not (its bytes travel base64-encoded, unchanged).
    """
    if content_type is None:
        return False
    _, is_text, charset = _content_type_kind(content_type)
    return is_text and charset in ("", "utf-8", "utf8", "us-ascii")


def _time_problem(value: str) -> str | None:
    m = _TIME_RE.fullmatch(value)
    if m is None:
        if _TIME_NO_SECONDS_RE.fullmatch(value):
            return f"not RFC 3339 ({value!r} has no seconds)"
        if _TIME_NO_ZONE_RE.fullmatch(value):
            return f"not RFC 3339 ({value!r} has no zone offset)"
        return f"not RFC 3339 ({value!r})"
    g = m.groups()
    month, day = int(g[1]), int(g[2])
    if not 1 <= month <= 12:
        return f"not RFC 3339 ({value!r}: month out of range)"
    if day > 28 or day < 1:
        year = int(g[0])
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        days = 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]
        if not 1 <= day <= days:
            return f"not RFC 3339 ({value!r}: day out of range)"
    if g[3] > "23" or g[4] > "59" or g[5] > "60":
        return f"not RFC 3339 ({value!r}: time of day out of range)"
    if g[8] is not None and (g[9] > "23" or g[10] > "59"):
        return f"not RFC 3339 ({value!r}: zone offset out of range)"
    return None


def parse_time(value: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (offsets kept; fraction truncated to microseconds;
    a leap second `:60` becomes `:59.999999`). Raises InvalidCloudEvent if not RFC 3339."""
    problem = _time_problem(value)
    if problem is not None:
        raise InvalidCloudEvent(problem, "time")
    m = _TIME_RE.fullmatch(value)
    assert m is not None
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if second == 60:
        second, micro = 59, 999999
    if m.group(8) is not None:
        tz = UTC
    else:
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(-offset if m.group(9) == "-" else offset)
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


def format_time(at: datetime, *, digits: int = 3) -> str:
    """`at` as an RFC 3339 UTC timestamp with `digits` (0, 3 or 6) fractional digits and `Z`.
    A naive datetime is taken as UTC."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    at = at.astimezone(UTC)
    base = f"{at.year:04d}-{at.month:02d}-{at.day:02d}T{at.hour:02d}:{at.minute:02d}:{at.second:02d}"
    if digits == 0:
        return base + "Z"
    return f"{base}.{at.microsecond:06d}"[: len(base) + 1 + digits] + "Z"


def _check_specversion(value: AttributeValue) -> None:
    sv = _check_string("specversion", value, non_empty=True)
    if sv != SPECVERSION:
        if sv == "0.3":
            raise InvalidCloudEvent(
                "CloudEvents 0.3 is not supported; only specversion '1.0' is accepted", "specversion"
            )
        raise InvalidCloudEvent(f"unknown specversion {sv!r} (only '1.0' is accepted)", "specversion")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidCloudEvent("attribute names must consist of lowercase a-z and 0-9 only", str(name))
    if name == "data":
        raise InvalidCloudEvent("'data' is not an attribute name", name)


# String attributes with a format beyond "String" (specversion is checked before the loop).
_SPECIAL_STRINGS = frozenset({"time", "datacontenttype", "dataschema"})


def check_attribute(name: str, value: AttributeValue) -> None:
    """Raise InvalidCloudEvent unless `value` is valid for the attribute `name` (its type and format)."""
    _check_value(name, value)


def _check_value(name: str, value: AttributeValue) -> None:
    if name in KNOWN:
        if name in REQUIRED:
            if name == "specversion":
                _check_specversion(value)
            else:
                _check_string(name, value, non_empty=True)
        elif name == "time":
            problem = _time_problem(_check_string(name, value, non_empty=True))
            if problem is not None:
                raise InvalidCloudEvent(problem, name)
        elif name == "datacontenttype":
            ct = _check_string(name, value, non_empty=True)
            if not is_media_type(ct):
                raise InvalidCloudEvent(f"not an RFC 2046 media type ({ct!r})", name)
        elif name == "dataschema":
            uri = _check_string(name, value, non_empty=True)
            if _ABSOLUTE_URI_RE.fullmatch(uri) is None:
                raise InvalidCloudEvent(f"not an absolute URI ({uri!r})", name)
        else:  # subject
            _check_string(name, value, non_empty=True)
        return
    # Extension: String, Integer (int32) or Boolean. bool is an int subclass: test it first.
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT32_MIN <= value <= INT32_MAX:
            raise InvalidCloudEvent(f"Integer {value} is outside the 32-bit signed range", name)
        return
    if isinstance(value, str):
        problem = _string_problem(value)
        if problem is not None:
            raise InvalidCloudEvent(problem, name)
        return
    raise InvalidCloudEvent(
        f"value of type {_type_name(value)} is not a CloudEvents String, Integer or Boolean", name
    )


_GOOD_NAMES: set[str] = set(KNOWN)
_MAX_GOOD_NAMES = 4096
_GOOD_CONTENT_TYPES: set[str] = set()
"""`datacontenttype` values already found valid (a handful per deployment, one per event checked)."""


def validate_attributes(attributes: Mapping[str, AttributeValue]) -> None:
    """Raise InvalidCloudEvent unless `attributes` are valid CloudEvents 1.0 context attributes."""
    if attributes.get("specversion") != SPECVERSION:
        if "specversion" not in attributes:
            raise InvalidCloudEvent("required attribute is missing", "specversion")
        _check_specversion(attributes["specversion"])
    for name in REQUIRED:
        if name not in attributes:
            raise InvalidCloudEvent("required attribute is missing", name)
    good = _GOOD_NAMES
    for name, value in attributes.items():
        if name not in good:
            _check_name(name)
            if len(good) < _MAX_GOOD_NAMES:
                good.add(name)
        # Fast path: a non-empty printable-ASCII String for a String-typed attribute.
        if (
            isinstance(value, str)
            and value
            and value.isascii()
            and value.isprintable()
            and name not in _SPECIAL_STRINGS
        ):
            continue
        if name == "datacontenttype" and isinstance(value, str):
            # The value may be a JSON array or object at runtime: only a str is looked up (hashable).
            if value in _GOOD_CONTENT_TYPES:
                continue  # a media type seen valid before: no regex per event
            _check_value(name, value)
            if len(_GOOD_CONTENT_TYPES) < _MAX_GOOD_NAMES:
                _GOOD_CONTENT_TYPES.add(value)
            continue
        _check_value(name, value)


def validate_event(ev: CloudEvent) -> CloudEvent:
    """Check `ev` against the CloudEvents 1.0 rules; return it unchanged, or raise InvalidCloudEvent."""
    validate_attributes(ev.attributes)
    if ev.data is not None and not isinstance(ev.data, bytes):
        raise InvalidCloudEvent(f"data must be bytes or None, got {type(ev.data).__name__}")
    return ev


def make_event(
    attributes: Mapping[str, AttributeValue], data: bytes | None = None, *, json_data: bool = False
) -> CloudEvent:
    """A validated CloudEvent (attributes copied; nothing added). Raises InvalidCloudEvent."""
    return validate_event(CloudEvent(dict(attributes), data, json_data))
