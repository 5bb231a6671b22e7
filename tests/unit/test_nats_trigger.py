"""Pure parts of the NATS trigger and sinks: lanes, consumer settings, connect options, dedupe ids."""

from __future__ import annotations

import pytest

from connectors.nats_client import NatsConfigError, connect_options
from connectors.nats_publish import dedupe_id
from schemas.cloudevent import CloudEvent
from schemas.trigger import JetStream, NatsSource, SecretRef
from triggers.nats_trigger import ack_wait_for, lane_for, max_deliver_for


def _event(**extra: str) -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "id": "e1", "source": "/s", "type": "t", **extra}, b"")


def test_lanes() -> None:
    ev = _event(partitionkey="cust-7")
    assert lane_for("none", "orders.1", ev) is None
    assert lane_for("partition", "orders.1", ev) == ("s", "orders.1")
    assert lane_for("key", "orders.1", ev) == ("k", "cust-7")
    assert lane_for("key", "orders.2", ev) == lane_for("key", "orders.1", ev)  # the key, not the subject
    assert lane_for("key", "orders.1", _event()) == ("s", "orders.1")  # no key: ordered per subject
    assert lane_for("key", "orders.1", None) == ("s", "orders.1")  # undecodable


def test_ack_wait_outlasts_a_dispatch() -> None:
    assert ack_wait_for(30.0, JetStream(stream="S")) == 60.0
    assert ack_wait_for(5.0, JetStream.model_validate({"stream": "S", "ackWait": "2m"})) == 120.0
    assert ack_wait_for(5.0, JetStream.model_validate({"stream": "S", "ackWait": "1s"})) == 35.0


def test_max_deliver_never_below_attempts() -> None:
    assert max_deliver_for(5, JetStream(stream="S")) == -1
    assert max_deliver_for(5, JetStream(stream="S", max_deliver=2)) == 5
    assert max_deliver_for(5, JetStream(stream="S", max_deliver=20)) == 20


def test_connect_options_read_secrets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_TOKEN_X", "s3cret")
    assert connect_options(NatsSource(subject="a", token_from=SecretRef(env="NATS_TOKEN_X"))) == {"token": "s3cret"}
    monkeypatch.setenv("NATS_PW_X", "pw")
    src = NatsSource(subject="a", user="bob", password_from=SecretRef(env="NATS_PW_X"))
    assert connect_options(src) == {"user": "bob", "password": "pw"}
    assert connect_options(NatsSource(subject="a")) == {}


def test_connect_options_missing_env_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_NOPE", raising=False)
    with pytest.raises(NatsConfigError, match=r"tokenFrom\.env: environment variable NATS_NOPE is not set"):
        connect_options(NatsSource(subject="a", token_from=SecretRef(env="NATS_NOPE")))
    with pytest.raises(NatsConfigError, match=r"passwordFrom\.env"):
        connect_options(NatsSource(subject="a", user="u", password_from=SecretRef(env="NATS_NOPE")))
    with pytest.raises(NatsConfigError, match="credsFile"):
        connect_options(NatsSource(subject="a", creds_file="/nonexistent/user.creds"))


def test_dedupe_ids_keep_dead_letters_and_replies_apart() -> None:
    ev = _event()
    dl, rep = dedupe_id("ns/t:dead_letter")(ev), dedupe_id("ns/t:reply")(ev)
    assert dl == "ns/t:dead_letter:/s:e1"
    assert dl != rep
    assert len(dedupe_id("p")(_event(source="/" + "x" * 2000))) == 512
