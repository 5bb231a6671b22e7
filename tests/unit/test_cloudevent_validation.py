"""Core attribute rules (CLOUDEVENTS.md §1) and the conformance JSON vectors (§7, branch format-tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from schemas.cloudevent import (
    CloudEvent,
    canonical_string,
    format_time,
    is_json_content_type,
    is_media_type,
    make_event,
    parse_time,
    validate_event,
)
from schemas.errors import InvalidCloudEvent, SchemaError, UnsupportedFormat
from schemas.json_format import decode_batch, decode_structured

BASE = {"specversion": "1.0", "id": "1", "source": "/s", "type": "com.example.t"}

# --- conformance vectors (cloudevents/conformance, branch format-tests, format/json/*.json) --------
SRC = "https://cloudevents.io"
T = "io.cloudevents.test"
INVALID_EVENTS: dict[str, dict[str, Any]] = {
    "invalidNoSpecVersion": {"id": "invalid", "type": T, "source": SRC},
    "invalidNoId": {"specversion": "1.0", "type": T, "source": SRC},
    "invalidNoType": {"specversion": "1.0", "id": "invalid", "source": SRC},
    "invalidNoSource": {"specversion": "1.0", "id": "invalid", "type": T},
    "invalidTimeGarbage": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "time": "lunchtime",
    },
    "invalidTimeToMinute": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "time": "2018-04-05T18:31Z",
    },
    "invalidTimeOffsetX": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "time": "2018-04-05T18:31:00X",
    },
    "invalidTimeOffsetOutOfRange": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "time": "2018-04-05T18:31:00+25:00",
    },
    "invalidTimeOffsetNonInteger": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "time": "2018-04-05T18:31:00+xx:00",
    },
    "invalidTimeOffsetHourOnly": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "time": "2018-04-05T18:31:00+05",
    },
    "invalidEmptyId": {"id": "", "specversion": "1.0", "type": T, "source": SRC},
    "invalidEmptyType": {"id": "invalid", "specversion": "1.0", "type": "", "source": SRC},
    "invalidEmptySource": {"id": "invalid", "specversion": "1.0", "type": T, "source": ""},
    "invalidEmptySpecVersion": {"id": "invalid", "specversion": "", "type": T, "source": SRC},
    "invalidUnknownSpecVersion": {"id": "invalid", "specversion": "0.9", "type": T, "source": SRC},
    "invalidNonRfc2046DataContentType": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "datacontenttype": "xyz",
    },
    "invalidEmptyDataContentType": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "datacontenttype": "",
    },
    "invalidEmptyDataSchema": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "dataschema": "",
    },
    "invalidEmptySubject": {"id": "invalid", "specversion": "1.0", "type": T, "source": SRC, "subject": ""},
    "invalidNumericId": {"id": 25, "specversion": "1.0", "type": T, "source": SRC},
    "invalidObjectId": {"id": {"xyz": "abc"}, "specversion": "1.0", "type": T, "source": SRC},
    "invalidCapitalizedExtension": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "MyExtension": "bad",
    },
    "invalidPunctuatedExtension": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "my.extension": "bad",
    },
    "invalidNonIntegerExtensionValue": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "my.extension": 1.5,
    },
    "invalidBothDataAndDataBase64": {
        "id": "invalid",
        "specversion": "1.0",
        "type": T,
        "source": SRC,
        "data": "text",
        "data_base64": "eyAieHl6IjogMTIzIH0=",
    },
}
# The field each invalid vector must be blamed on (None: the event as a whole).
INVALID_FIELD = {
    "invalidNoSpecVersion": "specversion",
    "invalidNoId": "id",
    "invalidNoType": "type",
    "invalidNoSource": "source",
    "invalidTimeGarbage": "time",
    "invalidTimeToMinute": "time",
    "invalidTimeOffsetX": "time",
    "invalidTimeOffsetOutOfRange": "time",
    "invalidTimeOffsetNonInteger": "time",
    "invalidTimeOffsetHourOnly": "time",
    "invalidEmptyId": "id",
    "invalidEmptyType": "type",
    "invalidEmptySource": "source",
    "invalidEmptySpecVersion": "specversion",
    "invalidUnknownSpecVersion": "specversion",
    "invalidNonRfc2046DataContentType": "datacontenttype",
    "invalidEmptyDataContentType": "datacontenttype",
    "invalidEmptyDataSchema": "dataschema",
    "invalidEmptySubject": "subject",
    "invalidNumericId": "id",
    "invalidObjectId": "id",
    "invalidCapitalizedExtension": "MyExtension",
    "invalidPunctuatedExtension": "my.extension",
    "invalidNonIntegerExtensionValue": "my.extension",
    "invalidBothDataAndDataBase64": None,
}

VALID_EVENTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # vector -> (event JSON, expected attributes)
    "validMinimal": (
        {"specversion": "1.0", "id": "minimal", "type": T, "source": SRC},
        {"specversion": "1.0", "id": "minimal", "type": T, "source": SRC},
    ),
    "validMinimalWithNullForOptional": (
        {
            "specversion": "1.0",
            "id": "minimal",
            "type": T,
            "source": SRC,
            "datacontenttype": None,
            "dataschema": None,
            "subject": None,
            "time": None,
        },
        {"specversion": "1.0", "id": "minimal", "type": T, "source": SRC},
    ),
    "validAllCoreAttributes": (
        {
            "specversion": "1.0",
            "id": "allCore",
            "type": T,
            "source": SRC,
            "datacontenttype": "text/plain",
            "dataschema": "https://cloudevents.io/dataschema",
            "subject": "tests",
            "time": "2018-04-05T17:31:00Z",
        },
        {
            "specversion": "1.0",
            "id": "allCore",
            "type": T,
            "source": SRC,
            "datacontenttype": "text/plain",
            "dataschema": "https://cloudevents.io/dataschema",
            "subject": "tests",
            "time": "2018-04-05T17:31:00Z",
        },
    ),
    "validMinimalWithTimeUtc": (
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T17:31:00Z",
        },
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T17:31:00Z",
        },
    ),
    "validMinimalWithTimeToNanosecondsUtc": (
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T17:31:00.000000000Z",
        },
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T17:31:00.000000000Z",
        },
    ),
    "validMinimalWithTimeUsingPositiveOffset": (
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T18:31:00+01:00",
        },
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T18:31:00+01:00",
        },
    ),
    "validMinimalWithTimeUsingNegativeOffset": (
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T16:31:00-01:00",
        },
        {
            "specversion": "1.0",
            "id": "minimalWithTime",
            "type": T,
            "source": SRC,
            "time": "2018-04-05T16:31:00-01:00",
        },
    ),
    "validRelativeSource": (
        {"id": "minimalWithRelativeSource", "specversion": "1.0", "type": T, "source": "#fragment"},
        {"id": "minimalWithRelativeSource", "specversion": "1.0", "type": T, "source": "#fragment"},
    ),
    "validSimpleTextData": (
        {
            "specversion": "1.0",
            "id": "simpleTextData",
            "type": T,
            "source": SRC,
            "datacontenttype": "text/plain",
            "data": "Simple text",
        },
        {
            "specversion": "1.0",
            "id": "simpleTextData",
            "type": T,
            "source": SRC,
            "datacontenttype": "text/plain",
        },
    ),
    "validAllExtensionTypes": (
        {
            "specversion": "1.0",
            "id": "allExtensionTypes",
            "type": T,
            "source": SRC,
            "extinteger": 10,
            "extboolean": True,
            "extstring": "text",
            "exturi": "https://cloudevents.io",
            "exturiref": "//authority/path",
            "exttimestamp": "2023-03-31T15:12:00Z",
            "extbinary": "TWE=",
        },
        {
            "specversion": "1.0",
            "id": "allExtensionTypes",
            "type": T,
            "source": SRC,
            "extinteger": 10,
            "extboolean": True,
            "extstring": "text",
            "exturi": "https://cloudevents.io",
            "exturiref": "//authority/path",
            "exttimestamp": "2023-03-31T15:12:00Z",
            "extbinary": "TWE=",
        },
    ),
}

MINIMAL = {"specversion": "1.0", "id": "minimal", "type": T, "source": SRC}
ALL_CORE = VALID_EVENTS["validAllCoreAttributes"][0]
ALL_EXT = VALID_EVENTS["validAllExtensionTypes"][0]
VALID_BATCHES: dict[str, list[dict[str, Any]]] = {
    "validBatchEmpty": [],
    "validBatchMinimal": [MINIMAL],
    "validBatchMinimal2": [MINIMAL, MINIMAL],
    "validBatchMinimalAndAllCore": [MINIMAL, ALL_CORE],
    "validBatchMinimalAndAllExtensionTypes": [MINIMAL, ALL_EXT],
}
INVALID_BATCHES: dict[str, tuple[list[Any], int]] = {  # vector -> (batch, failing member)
    "invalidBatchMixedSpecVersions": (
        [
            {"specversion": "1.0", "id": "minimal1", "type": T, "source": SRC},
            {"specversion": "0.9", "id": "minimal2", "type": T, "source": SRC},
        ],
        1,
    ),
    "invalidBatchContainingInvalidCloudEvent": ([{"specversion": "1.0", "type": T, "source": SRC}], 0),
    "invalidBatchContainingNonObject": (
        ["not an object", {"specversion": "1.0", "id": "minimal1", "type": T, "source": SRC}],
        0,
    ),
}


def test_vector_counts_match_the_checklist() -> None:
    assert len(INVALID_EVENTS) == 25
    assert len(VALID_EVENTS) == 10
    assert len(INVALID_BATCHES) == 3
    assert len(VALID_BATCHES) == 5


@pytest.mark.parametrize("name", sorted(INVALID_EVENTS))
def test_conformance_invalid_event(name: str) -> None:
    body = json.dumps(INVALID_EVENTS[name]).encode()
    with pytest.raises(InvalidCloudEvent) as info:
        decode_structured(body)
    assert info.value.field == INVALID_FIELD[name]
    assert str(info.value).startswith("invalid CloudEvent: ")


@pytest.mark.parametrize("name", sorted(VALID_EVENTS))
def test_conformance_valid_event(name: str) -> None:
    event, expected = VALID_EVENTS[name]
    ev = decode_structured(json.dumps(event).encode())
    assert dict(ev.attributes) == expected
    # types kept: Integer stays int, Boolean stays bool (no stringification)
    for key, value in expected.items():
        assert type(ev.attributes[key]) is type(value)


def test_valid_offsets_denote_the_same_instant() -> None:
    utc = parse_time("2018-04-05T17:31:00Z")
    assert parse_time("2018-04-05T18:31:00+01:00") == utc
    assert parse_time("2018-04-05T16:31:00-01:00") == utc
    assert parse_time("2018-04-05T17:31:00.000000000Z") == utc
    assert parse_time("2018-04-05T18:31:00+01:00").utcoffset() == timedelta(hours=1)


@pytest.mark.parametrize("name", sorted(VALID_BATCHES))
def test_conformance_valid_batch(name: str) -> None:
    batch = VALID_BATCHES[name]
    evs = decode_batch(json.dumps(batch).encode())
    assert [ev.attributes["id"] for ev in evs] == [m["id"] for m in batch]


@pytest.mark.parametrize("name", sorted(INVALID_BATCHES))
def test_conformance_invalid_batch(name: str) -> None:
    batch, member = INVALID_BATCHES[name]
    with pytest.raises(InvalidCloudEvent) as info:
        decode_batch(json.dumps(batch).encode())
    assert info.value.member == member


# --- core rules through make_event / validate_event ------------------------------------------------


def test_time_without_seconds_message_is_exact() -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "time": "2018-04-05T18:31Z"})
    assert str(info.value) == (
        "invalid CloudEvent: attribute 'time': not RFC 3339 ('2018-04-05T18:31Z' has no seconds)"
    )
    assert info.value.reason == "not RFC 3339 ('2018-04-05T18:31Z' has no seconds)"
    assert info.value.field == "time"
    assert isinstance(info.value, SchemaError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "value",
    [
        "2018-04-05T17:31:00",  # no zone (edge case 7)
        "2018-04-05T18:31Z",  # no seconds (edge case 7)
        "2018-04-05 17:31:00Z",
        "2018-13-05T17:31:00Z",
        "2019-02-29T17:31:00Z",
        "2018-04-31T17:31:00Z",
        "2018-04-05T24:00:00Z",
        "2018-04-05T17:60:00Z",
        "2018-04-05T17:31:00+01:60",
        "2018-04-05T17:31:00.Z",
        "\uff12\uff10\uff11\uff18-04-05T17:31:00Z"  # fullwidth digits,
        "",
    ],
)
def test_time_invalid(value: str) -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "time": value})
    assert info.value.field == "time"


def test_time_no_zone_message() -> None:
    with pytest.raises(InvalidCloudEvent, match="has no zone offset"):
        make_event({**BASE, "time": "2018-04-05T17:31:00"})


@pytest.mark.parametrize(
    "value",
    [
        "2018-04-05T17:31:00Z",
        "2018-04-05t17:31:00z",
        "2020-02-29T00:00:00+14:00",
        "2016-12-31T23:59:60Z",
        "2018-04-05T17:31:00.123456789-05:30",
    ],
)
def test_time_valid_and_original_string_kept(value: str) -> None:
    ev = make_event({**BASE, "time": value})
    assert ev.attributes["time"] == value


def test_parse_time_values() -> None:
    assert parse_time("2018-04-05T17:31:00.123456789-05:30") == datetime(
        2018, 4, 5, 17, 31, 0, 123456, tzinfo=timezone(-timedelta(hours=5, minutes=30))
    )
    assert parse_time("2016-12-31T23:59:60Z") == datetime(2016, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def test_format_time() -> None:
    at = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(at) == "2024-01-02T01:04:05.678Z"
    assert format_time(at, digits=6) == "2024-01-02T01:04:05.678901Z"
    assert format_time(at, digits=0) == "2024-01-02T01:04:05Z"
    assert format_time(datetime(2024, 1, 2, 3, 4, 5)) == "2024-01-02T03:04:05.000Z"


@pytest.mark.parametrize("missing", ["id", "source", "specversion", "type"])
def test_required_missing(missing: str) -> None:
    attrs = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(InvalidCloudEvent) as info:
        make_event(attrs)
    assert info.value.field == missing
    assert info.value.reason == "required attribute is missing"


@pytest.mark.parametrize(
    "name", ["id", "source", "specversion", "type", "subject", "dataschema", "datacontenttype"]
)
def test_empty_string_invalid(name: str) -> None:  # edge case 3
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, name: ""})
    assert info.value.field == name


def test_specversion_09_and_03_rejected_with_clear_messages() -> None:  # edge case 19
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "specversion": "0.9"})
    assert (
        str(info.value)
        == "invalid CloudEvent: attribute 'specversion': unknown specversion '0.9' (only '1.0' is accepted)"
    )
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "specversion": "0.3"})
    assert info.value.reason == "CloudEvents 0.3 is not supported; only specversion '1.0' is accepted"
    with pytest.raises(InvalidCloudEvent):
        make_event({**BASE, "specversion": "1.0.2"})


@pytest.mark.parametrize("name", ["MyExt", "my-ext", "my_ext", "my.ext", "data", "", "ünï", "data_base64"])
def test_invalid_names(name: str) -> None:  # edge case 10
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, name: "x"})
    assert info.value.field == name


@pytest.mark.parametrize("value", [2**31 - 1, -(2**31), 0])
def test_int32_range_ok(value: int) -> None:
    assert make_event({**BASE, "ext": value}).attributes["ext"] == value


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 1.5, 1.0, None, [1], {"a": 1}, b"x"])
def test_extension_wrong_types(value: Any) -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "ext": value})
    assert info.value.field == "ext"


@pytest.mark.parametrize(
    "value",
    [
        "a\x00b",
        "tab\there",
        "new\nline",
        "del\x7f",
        "c1\x85",
        "nonchar\ufffe",
        "nonchar\ufdd0",
        "plane16\U0010ffff",
        "lone\ud800",
    ],
)
def test_string_forbidden_characters(value: str) -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "subject": value})
    assert info.value.field == "subject"
    with pytest.raises(InvalidCloudEvent):
        make_event({**BASE, "ext": value})


def test_string_non_ascii_allowed() -> None:
    ev = make_event({**BASE, "subject": "Euro € 😀", "ext": "\u00a0nbsp"})
    assert ev.attributes["subject"] == "Euro € 😀"


def test_bools_are_real_bools() -> None:
    ev = make_event({**BASE, "flag": True, "n": 1})
    assert ev.attributes["flag"] is True and ev.attributes["n"] == 1
    assert canonical_string(True) == "true" and canonical_string(False) == "false"
    with pytest.raises(InvalidCloudEvent):
        make_event({**BASE, "id": True})


@pytest.mark.parametrize(
    "ct",
    [
        "application/json",
        "text/plain; charset=utf-8",
        "TEXT/Plain; CharSet=utf-8",
        'multipart/mixed; boundary="a b"',
        "application/vnd.api+json",
        "image/x+json;a=b;c=d",
    ],
)
def test_media_types_valid(ct: str) -> None:
    assert is_media_type(ct)
    assert make_event({**BASE, "datacontenttype": ct}).attributes["datacontenttype"] == ct


@pytest.mark.parametrize(
    "ct", ["xyz", "text/", "/plain", "text/plain;", "text/plain; charset", "a b/c", "text/plän"]
)
def test_media_types_invalid(ct: str) -> None:  # edge case 15
    assert not is_media_type(ct)
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "datacontenttype": ct})
    assert info.value.field == "datacontenttype"


@pytest.mark.parametrize(
    ("ct", "is_json"),
    [
        (None, True),
        ("application/json", True),
        ("Application/JSON", True),
        ("text/json; charset=utf-8", True),
        ("image/x+json", True),
        ("application/cloudevents+json", True),
        ("text/plain", False),
        ("application/json-seq", False),
        ("application/jsonx", False),
    ],
)
def test_json_content_type_rule(ct: str | None, is_json: bool) -> None:  # edge case 12
    assert is_json_content_type(ct) is is_json


@pytest.mark.parametrize("uri", ["https://x.example/s.json", "urn:ietf:rfc:3986", "http://a/%41"])
def test_dataschema_valid(uri: str) -> None:
    assert make_event({**BASE, "dataschema": uri}).attributes["dataschema"] == uri


@pytest.mark.parametrize("uri", ["/relative/path", "#frag", "http://a b", "1http://x", "http://a/%zz", ""])
def test_dataschema_must_be_absolute_uri(uri: str) -> None:
    with pytest.raises(InvalidCloudEvent) as info:
        make_event({**BASE, "dataschema": uri})
    assert info.value.field == "dataschema"


@pytest.mark.parametrize("source", ["/x", "#fragment", "1-555-123-4567", "urn:uuid:6e8bc430-9c3a-11d9-9669"])
def test_relative_sources_legal(source: str) -> None:
    assert make_event({**BASE, "source": source}).source == source


def test_validate_event_returns_same_object_and_checks_data_type() -> None:
    ev = CloudEvent(dict(BASE), b"x")
    assert validate_event(ev) is ev
    with pytest.raises(InvalidCloudEvent):
        validate_event(CloudEvent(dict(BASE), "text"))  # type: ignore[arg-type]


def test_make_event_copies_and_invents_nothing() -> None:  # edge case 20
    attrs = dict(BASE)
    ev = make_event(attrs)
    attrs["subject"] = "later"
    assert dict(ev.attributes) == BASE
    assert ev.data is None


def test_error_hierarchy() -> None:
    assert issubclass(InvalidCloudEvent, SchemaError)
    assert issubclass(UnsupportedFormat, SchemaError)
    assert issubclass(SchemaError, ValueError)
    err = InvalidCloudEvent("bad", "ce-id", location="header", member=2)
    assert str(err) == "invalid CloudEvent (batch member 2): header 'ce-id': bad"
    assert str(InvalidCloudEvent("oops")) == "invalid CloudEvent: oops"
    assert str(UnsupportedFormat("application/cloudevents+avro")) == (
        "unsupported CloudEvents format 'application/cloudevents+avro'"
    )


def test_receive_path_does_not_import_the_cloudevents_sdk() -> None:
    code = (
        "import sys\n"
        "import schemas.cloudevent, schemas.headers, schemas.json_format, schemas.http_binding\n"
        "import schemas.kafka_binding, schemas.nats_binding, schemas.deadletter\n"
        "from schemas.http_binding import from_http\n"
        "from schemas.kafka_binding import from_kafka\n"
        "from schemas.nats_binding import from_nats\n"
        "h = {'ce-specversion': '1.0', 'ce-id': '1', 'ce-source': '/s', 'ce-type': 't'}\n"
        "from_http(h, b'x'); from_nats(h, b'x')\n"
        "from_kafka([(k.replace('-', '_'), v.encode()) for k, v in h.items()], b'x')\n"
        "bad = sorted(m for m in sys.modules if m == 'cloudevents' or m.startswith('cloudevents.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "ok\n"


@pytest.mark.parametrize("value", [[], {}, ["text/plain"], {"a": 1}])
@pytest.mark.parametrize("name", ["datacontenttype", "subject", "type", "myext"])
def test_unhashable_attribute_values_are_invalid_not_type_errors(name: str, value: object) -> None:
    """A JSON array or object as an attribute value is the sender's error (found by CI's property test)."""
    for _ in range(2):  # the second pass runs after any cache of good values has been filled
        make_event({**BASE, "datacontenttype": "application/json"})
        with pytest.raises(InvalidCloudEvent) as info:
            make_event({**BASE, name: value})  # type: ignore[dict-item]
        assert info.value.field == name
