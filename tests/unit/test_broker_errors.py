"""How auth and TLS refusals are named (the sentences users read in the log), and the nkey seed option."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from nats.errors import Error as NatsError
from pydantic import ValidationError

from connectors.broker_errors import BrokerAuthError, BrokerTlsError, tls_failed_message
from connectors.kafka import KafkaAuthError, KafkaTlsError, diagnose_refusal
from connectors.nats_client import (
    NatsAuthError,
    NatsConfigError,
    NatsTlsError,
    NatsUnreachable,
    connect_options,
    named_refusal,
)
from schemas.trigger import NatsSource

SERVERS = ["tls://127.0.0.1:4223"]


def _verify_error(message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    exc.verify_message = message
    return exc


def test_certificate_verify_failures_are_named() -> None:
    err = named_refusal(SERVERS, _verify_error("certificate has expired"))
    assert isinstance(err, NatsTlsError) and isinstance(err, BrokerTlsError) and isinstance(err, NatsUnreachable)
    assert str(err) == "TLS: certificate verify failed for tls://127.0.0.1:4223 (certificate has expired)"


def test_other_tls_failures_say_handshake() -> None:
    exc = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")
    exc.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert tls_failed_message("127.0.0.1:9095", exc) == \
        "TLS: handshake failed for 127.0.0.1:9095: TLSV13_ALERT_CERTIFICATE_REQUIRED"


def test_auth_rejections_are_named() -> None:
    err = named_refusal(SERVERS, NatsError("nats: 'Authorization Violation'"))
    assert isinstance(err, NatsAuthError) and isinstance(err, BrokerAuthError)
    assert str(err) == "authentication failed for NATS at tls://127.0.0.1:4223: Authorization Violation"


def test_unreachable_stays_unreachable() -> None:
    err = named_refusal(SERVERS, ConnectionRefusedError(111, "Connection refused"))
    assert type(err) is NatsUnreachable
    assert str(err).startswith("cannot reach NATS at tls://127.0.0.1:4223: ")


def test_kafka_errors_are_connection_errors() -> None:
    """The runtime retries ConnectionErrors with backoff: an auth or TLS refusal must be one of them."""
    assert issubclass(KafkaAuthError, ConnectionError) and issubclass(KafkaTlsError, ConnectionError)


async def test_plain_kafka_clients_are_not_diagnosed() -> None:
    assert await diagnose_refusal("127.0.0.1:1", {}) is None


def test_nkey_seed_file(tmp_path: Path) -> None:
    seed = tmp_path / "user.nk"
    seed.write_text("SUAEXAMPLE\n")
    assert connect_options(NatsSource(subject="a", nkey_seed_file=str(seed))) == {"nkeys_seed": str(seed)}
    with pytest.raises(NatsConfigError, match=r"nkeySeedFile: .* is not a readable file"):
        connect_options(NatsSource(subject="a", nkey_seed_file=str(tmp_path / "missing.nk")))
    with pytest.raises(ValidationError, match=r"set at most one of .*found: user, nkeySeedFile"):
        NatsSource.model_validate({"subject": "a", "user": "bob", "nkeySeedFile": str(seed)})
