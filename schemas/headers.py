"""Header-value percent-encoding of the CloudEvents HTTP binding (also used by the NATS binding).

Encode: space, `"`, `%` and everything outside U+0021..U+007E become `%XY` (uppercase hex) per UTF-8 byte.
Decode: unescape an RFC 7230 quoted-string, then exactly one round of percent-decoding; lowercase hex and
needless escapes are accepted; the result must be valid UTF-8 (`%C0%A0` is rejected).
"""

from __future__ import annotations

from collections.abc import Mapping

from schemas.cloudevent import AttributeValue
from schemas.errors import InvalidCloudEvent

_HEX = frozenset("0123456789abcdefABCDEF")
# Characters that pass unencoded: U+0021..U+007E except '"' and '%'.
_SAFE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "%"}
_ESCAPES = {c: c if c in _SAFE else f"%{ord(c):02X}" for c in map(chr, range(0x80))}


def encode_header_value(s: str) -> str:
    """Percent-encode a canonical attribute string for an HTTP/NATS header value."""
    if s.isascii() and s.isprintable() and " " not in s and '"' not in s and "%" not in s:
        return s  # fast path: nothing to encode
    out: list[str] = []
    for ch in s:
        if ch < "\x80":
            out.append(_ESCAPES[ch])
        else:
            try:
                raw = ch.encode("utf-8")
            except UnicodeEncodeError as exc:  # lone surrogate
                raise InvalidCloudEvent(f"U+{ord(ch):04X} cannot be encoded as UTF-8") from exc
            out.append("".join(f"%{b:02X}" for b in raw))
    return "".join(out)


def _unquote(s: str, field: str) -> str:
    """Unescape an RFC 7230 quoted-string (`"a \\"b\\""` -> `a "b"`)."""
    if len(s) < 2 or s[0] != '"' or s[-1] != '"':
        raise InvalidCloudEvent('unencoded \'"\' outside a quoted-string', field, location="header")
    inner = s[1:-1]
    if "\\" not in inner:
        if '"' in inner:
            raise InvalidCloudEvent('unescaped \'"\' inside a quoted-string', field, location="header")
        return inner
    out: list[str] = []
    i, n = 0, len(inner)
    while i < n:
        ch = inner[i]
        if ch == "\\":
            if i + 1 == n:
                raise InvalidCloudEvent("quoted-string ends with a lone backslash", field, location="header")
            out.append(inner[i + 1])
            i += 2
            continue
        if ch == '"':
            raise InvalidCloudEvent('unescaped \'"\' inside a quoted-string', field, location="header")
        out.append(ch)
        i += 1
    return "".join(out)


def decode_header_value(s: str, field: str) -> str:
    """Decode an HTTP/NATS CloudEvents header value; `field` (the header name) is named in errors."""
    if '"' in s:
        s = _unquote(s, field)
    if "%" not in s:
        return s
    parts = s.split("%")
    try:
        out = bytearray(parts[0].encode("utf-8"))
        for part in parts[1:]:
            if len(part) < 2 or part[0] not in _HEX or part[1] not in _HEX:
                raise InvalidCloudEvent(
                    f"'%' not followed by two hex digits in {s!r}", field, location="header"
                )
            out.append(int(part[:2], 16))
            out += part[2:].encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidCloudEvent("value contains a lone surrogate", field, location="header") from exc
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidCloudEvent(
            f"not valid UTF-8 after percent-decoding ({s!r}: {exc.reason} at byte {exc.start})",
            field,
            location="header",
        ) from exc


def find_header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` (given in lowercase), looked up case-insensitively in any mapping."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def decode_ce_headers(headers: Mapping[str, str]) -> dict[str, AttributeValue]:
    """Every `ce-*` header (prefix and name case-insensitive) as an attribute, percent-decoded once.

    Works on a plain dict and on multi-dicts (aiohttp's CIMultiDictProxy, whose `items()` repeats a
    header that appears more than once). An attribute given twice is invalid. Values are not validated.
    """
    attrs: dict[str, AttributeValue] = {}
    for key, value in headers.items():
        if key[:3].lower() == "ce-":
            name = key[3:].lower()
            if name in attrs:
                raise InvalidCloudEvent("header appears more than once", key, location="header")
            attrs[name] = decode_header_value(value, key)
    return attrs
