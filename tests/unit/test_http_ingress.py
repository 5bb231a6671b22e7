"""Pure parts of the HTTP ingress: request decoding, webhook auth, subject coverage, size parsing."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from connectors.embedded_nats import subject_covers
from connectors.http_auth import AuthConfigError, Authenticator, Unauthorized, sign
from connectors.http_ingress import IngressConfig, decode_request
from eventbus.cli import _size
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.trigger import HttpAuth

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_raw_request_wrapped() -> None:
    [ev] = decode_request({"Content-Type": "text/plain", "X-GitHub-Delivery": "gh-1"}, b"hi", host="h:1",
                          path="/p", now=NOW)
    assert dict(ev.attributes) == {"specversion": "1.0", "id": "gh-1", "source": "http://h:1/p",
                                   "type": "dev.eventbus.http.request", "time": "2026-01-02T03:04:05.000Z",
                                   "datacontenttype": "text/plain"}
    assert ev.data == b"hi"


def test_raw_request_defaults_and_new_ids() -> None:
    a = decode_request({}, b"", host="h", path="/p", event_type="com.x", event_source="urn:s")
    b = decode_request({}, b"", host="h", path="/p")
    assert a[0].type == "com.x" and a[0].source == "urn:s" and a[0].data is None
    assert a[0].id != b[0].id


def test_cloudevents_pass_through_and_raw_refused_for_topics() -> None:
    [ev] = decode_request({"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t"}, b"x",
                          host="h", path="/p")
    assert ev.id == "1" and "time" not in ev.attributes
    with pytest.raises(InvalidCloudEvent) as err:
        decode_request({"Content-Type": "text/plain"}, b"x", host="h", path="/p", allow_raw=False)
    assert err.value.field == "ce-specversion"
    with pytest.raises(UnsupportedFormat):
        decode_request({"Content-Type": "application/cloudevents+avro"}, b"x", host="h", path="/p")


def test_hmac_and_bearer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S", "secret")
    monkeypatch.setenv("T", "token")
    auth = Authenticator.from_spec(HttpAuth.model_validate(
        {"hmac": {"secretFrom": {"env": "S"}}, "bearerTokenFrom": {"env": "T"}}))
    good = {"Authorization": "Bearer token", "X-Hub-Signature-256": sign(b"secret", b"body")}
    auth.check(good, b"body")
    for bad in ({**good, "Authorization": "Bearer nope"}, {**good, "X-Hub-Signature-256": sign(b"x", b"body")},
                {"Authorization": "Bearer token"}):
        with pytest.raises(Unauthorized):
            auth.check(bad, b"body")
    with pytest.raises(Unauthorized):
        auth.check(good, b"body2")
    monkeypatch.delenv("S")
    with pytest.raises(AuthConfigError):
        Authenticator.from_spec(HttpAuth.model_validate({"hmac": {"secretFrom": {"env": "S"}}}))


@pytest.mark.parametrize(("pattern", "subject", "covers"), [
    ("orders.>", "orders.new", True), ("orders.>", "orders.>", True), ("orders.>", "orders", False),
    ("orders.*", "orders.new", True), ("orders.*", "orders.a.b", False), ("orders.*", "orders.>", False),
    ("a.b", "a.b", True), ("a.b", "a.*", False), (">", "x.y", True), ("a.*.c", "a.*.c", True),
])
def test_subject_covers(pattern: str, subject: str, covers: bool) -> None:
    assert subject_covers(pattern, subject) is covers


def test_sizes() -> None:
    assert _size("1MiB") == 1 << 20 and _size("65536") == 65536 and _size("512KiB") == 512 << 10
    with pytest.raises(argparse.ArgumentTypeError):
        _size("1000")
    with pytest.raises(ValueError):
        IngressConfig(max_body=1000)
