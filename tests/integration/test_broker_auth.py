"""Broker auth against real servers that demand it (started by `scripts/services up`, named in .services.env).

Kafka: a SASL_SSL listener with a SCRAM-SHA-512 user, an SSL listener that requires client certificates, and an
SSL listener whose server certificate has expired, all in the one test broker. NATS: a server that demands TLS
and a user/password or an nkey, and one whose certificate has expired. Each mechanism delivers end to end
through a Trigger; a wrong password, an untrusted CA and an expired certificate each give a named error, the
trigger is retried with backoff, /readyz says not ready, and a healthy trigger of the same runtime keeps
delivering.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import nats
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

from eventbus.runtime import Runtime, RuntimeConfig
from schemas.loader import parse_triggers
from tests.conftest import KafkaAdmin, _configured
from tests.integration.support import FunctionServer
from triggers.metrics import Metrics

pytestmark = pytest.mark.integration

AUTH_VARS = (
    "EVENTBUS_TLS_CA", "EVENTBUS_TLS_UNTRUSTED_CA", "EVENTBUS_TLS_CLIENT_CERT", "EVENTBUS_TLS_CLIENT_KEY",
    "EVENTBUS_KAFKA_SASL_SSL_BOOTSTRAP", "EVENTBUS_KAFKA_SCRAM_USER", "EVENTBUS_KAFKA_SCRAM_PASSWORD",
    "EVENTBUS_KAFKA_SSL_BOOTSTRAP", "EVENTBUS_KAFKA_EXPIRED_CERT_BOOTSTRAP",
    "EVENTBUS_NATS_TLS_URL", "EVENTBUS_NATS_EXPIRED_CERT_URL", "EVENTBUS_NATS_USER", "EVENTBUS_NATS_PASSWORD",
    "EVENTBUS_NATS_NKEY_SEED_FILE",
)
PASSWORD_ENV = "EB_TEST_BROKER_PASSWORD"
WRONG_PASSWORD_ENV = "EB_TEST_BROKER_WRONG_PASSWORD"


@pytest.fixture(scope="module")
def auth() -> dict[str, str]:
    """The auth listeners' addresses and test credentials (from the environment or .services.env)."""
    found: dict[str, str] = {}
    missing = []
    for var in AUTH_VARS:
        value = _configured(var)
        if value is None:
            missing.append(var)
        else:
            found[var] = value[0]
    if missing:
        pytest.fail(f"no auth listeners to test against ({', '.join(missing)} unset): run `scripts/services up` "
                    "(it starts them and writes .services.env)", pytrace=False)
    return found


@pytest.fixture
def secrets_env(auth: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Triggers name their secrets by environment variable (`passwordFrom: {env: ...}`)."""
    monkeypatch.setenv(PASSWORD_ENV, auth["EVENTBUS_KAFKA_SCRAM_PASSWORD"])
    monkeypatch.setenv("EB_TEST_NATS_PASSWORD", auth["EVENTBUS_NATS_PASSWORD"])
    monkeypatch.setenv(WRONG_PASSWORD_ENV, "not-the-password")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    runtime: Runtime
    admin_url: str

    async def readyz(self) -> int:
        async with aiohttp.ClientSession() as session, session.get(f"{self.admin_url}/readyz") as resp:
            return resp.status


@pytest.fixture
async def start_runtime(fn: FunctionServer) -> AsyncIterator[object]:
    """`await start_runtime(yaml)`: an in-process runtime with /readyz, stopped at the end of the test."""
    runtimes: list[Runtime] = []

    async def start(yaml_text: str) -> Running:
        port = _free_port()
        rt = Runtime(RuntimeConfig(gateway=fn.url, grace=2.0, metrics_port=port),
                     metrics=Metrics(CollectorRegistry()))
        runtimes.append(rt)
        await rt.start(parse_triggers(yaml_text, "test.yaml"))
        return Running(rt, f"http://127.0.0.1:{port}")

    yield start
    for rt in runtimes:
        await rt.stop()


@pytest.fixture
def runtime_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="eventbus")
    yield caplog


def _record_text(record: logging.LogRecord) -> str:
    """A log line as a user sees it: the message and every structured field."""
    fields = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STD_ATTRS)
    return f"{record.getMessage()} {fields}"


_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def failures(caplog: pytest.LogCaptureFixture, trigger: str) -> list[tuple[float, str]]:
    """(time, text) of the ERROR records about `trigger` from the runtime."""
    return [(r.created, _record_text(r)) for r in caplog.records
            if r.levelno >= logging.ERROR and getattr(r, "trigger", None) == trigger]


async def wait_failures(caplog: pytest.LogCaptureFixture, triggers: list[str], count: int,
                        timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if all(len(failures(caplog, t)) >= count for t in triggers):
            return
        await asyncio.sleep(0.1)
    got = {t: [text for _, text in failures(caplog, t)] for t in triggers}
    raise AssertionError(f"expected {count} failures per trigger within {timeout}s, got {got}")


def assert_retried_with_backoff(caplog: pytest.LogCaptureFixture, trigger: str, expected: str) -> None:
    found = failures(caplog, trigger)
    assert len(found) >= 2, found
    for _, text in found:
        assert expected in text, f"{expected!r} not in {text!r}"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(found)]
    assert min(gaps) >= 0.5, f"{trigger} retried in a hot loop: gaps {gaps}"


def kafka_trigger(name: str, topic: str, bootstrap: str, auth_yaml: str) -> str:
    return f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}, namespace: auth}}
spec:
  source:
    kafka:
      bootstrapServers: ['{bootstrap}']
      topics: [{topic}]
      initialOffset: earliest
{auth_yaml}
  function: {{name: {name}}}
  delivery: {{timeout: 5s, retry: {{attempts: 2, delay: 10ms, maxDelay: 50ms}}}}
---
"""


def nats_trigger(name: str, subject: str, url: str, auth_yaml: str) -> str:
    return f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}, namespace: auth}}
spec:
  source:
    nats:
      servers: ['{url}']
      subject: '{subject}'
{auth_yaml}
  function: {{name: {name}}}
  delivery: {{timeout: 5s, retry: {{attempts: 2, delay: 10ms, maxDelay: 50ms}}}}
---
"""


def indent(text: str) -> str:
    return "\n".join("      " + line for line in text.strip().splitlines())


# --- Kafka -----------------------------------------------------------------------------------------------


def scram_yaml(auth: dict[str, str], password_env: str = PASSWORD_ENV, ca: str | None = None) -> str:
    return indent(f"""
sasl: {{mechanism: SCRAM-SHA-512, username: {auth['EVENTBUS_KAFKA_SCRAM_USER']}, passwordFrom: {{env: {password_env}}}}}
tls: {{caFile: '{ca or auth['EVENTBUS_TLS_CA']}'}}
""")


def scram_producer(auth: dict[str, str]) -> AIOKafkaProducer:
    ctx = ssl.create_default_context(cafile=auth["EVENTBUS_TLS_CA"])
    return AIOKafkaProducer(
        bootstrap_servers=auth["EVENTBUS_KAFKA_SASL_SSL_BOOTSTRAP"], security_protocol="SASL_SSL",
        ssl_context=ctx, sasl_mechanism="SCRAM-SHA-512", sasl_plain_username=auth["EVENTBUS_KAFKA_SCRAM_USER"],
        sasl_plain_password=auth["EVENTBUS_KAFKA_SCRAM_PASSWORD"], acks="all",
    )


async def test_kafka_sasl_ssl_scram_and_client_certificate_deliver(
    auth: dict[str, str], secrets_env: None, kafka_admin: KafkaAdmin, fn: FunctionServer,
    start_runtime: object, unique_name: str,
) -> None:
    topic = await kafka_admin.create_topic(unique_name)
    mtls = indent(f"""
tls:
  caFile: '{auth['EVENTBUS_TLS_CA']}'
  certFile: '{auth['EVENTBUS_TLS_CLIENT_CERT']}'
  keyFile: '{auth['EVENTBUS_TLS_CLIENT_KEY']}'
""")
    specs = (kafka_trigger("scram", topic, auth["EVENTBUS_KAFKA_SASL_SSL_BOOTSTRAP"], scram_yaml(auth))
             + kafka_trigger("mtls", topic, auth["EVENTBUS_KAFKA_SSL_BOOTSTRAP"], mtls))
    running = await start_runtime(specs)  # type: ignore[operator]
    producer = scram_producer(auth)  # the record itself goes in through SASL_SSL too
    await producer.start()
    try:
        await producer.send_and_wait(topic, b'{"n": 1}', key=b"k",
                                     headers=[("ce_id", b"e1"), ("ce_type", b"t"), ("ce_source", b"/s"),
                                              ("ce_specversion", b"1.0"), ("content-type", b"application/json")])
    finally:
        await producer.stop()
    await fn.wait_for(lambda: {r.path for r in fn.received} >= {"/auth/scram", "/auth/mtls"}, timeout=30,
                      what="the event through the SASL_SSL and the client-certificate listener")
    assert sorted((r.path, r.ce_id, r.body) for r in fn.received) == [
        ("/auth/mtls", "e1", b'{"n": 1}'), ("/auth/scram", "e1", b'{"n": 1}')]
    assert await running.readyz() == 200


async def test_kafka_refusals_are_named_retried_and_do_not_stop_other_triggers(
    auth: dict[str, str], secrets_env: None, kafka_admin: KafkaAdmin, kafka_bootstrap: str, fn: FunctionServer,
    start_runtime: object, runtime_log: pytest.LogCaptureFixture, unique_name: str,
) -> None:
    topic = await kafka_admin.create_topic(unique_name)
    sasl = auth["EVENTBUS_KAFKA_SASL_SSL_BOOTSTRAP"]
    expired = auth["EVENTBUS_KAFKA_EXPIRED_CERT_BOOTSTRAP"]
    specs = (
        kafka_trigger("wrong-password", topic, sasl, scram_yaml(auth, WRONG_PASSWORD_ENV))
        + kafka_trigger("untrusted-ca", topic, sasl, scram_yaml(auth, ca=auth["EVENTBUS_TLS_UNTRUSTED_CA"]))
        + kafka_trigger("expired-cert", topic, expired, indent(f"tls: {{caFile: '{auth['EVENTBUS_TLS_CA']}'}}"))
        + kafka_trigger("healthy", topic, sasl, scram_yaml(auth))
    )
    running = await start_runtime(specs)  # type: ignore[operator]
    bad = ["auth/wrong-password", "auth/untrusted-ca", "auth/expired-cert"]
    await wait_failures(runtime_log, bad, 2)
    assert_retried_with_backoff(runtime_log, "auth/wrong-password", f"authentication failed for Kafka at {sasl}")
    assert_retried_with_backoff(runtime_log, "auth/untrusted-ca", f"TLS: certificate verify failed for {sasl}")
    assert_retried_with_backoff(runtime_log, "auth/expired-cert",
                                f"TLS: certificate verify failed for {expired} (certificate has expired)")
    assert await running.readyz() == 503

    producer = scram_producer(auth)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"raw", key=b"k")
    finally:
        await producer.stop()
    await fn.wait_for(lambda: any(r.path == "/auth/healthy" for r in fn.received), timeout=30,
                      what="delivery through the healthy trigger while the others fail")
    assert {r.path for r in fn.received} == {"/auth/healthy"}
    assert not failures(runtime_log, "auth/healthy")


# --- NATS ------------------------------------------------------------------------------------------------


def nats_password_yaml(auth: dict[str, str], password_env: str = "EB_TEST_NATS_PASSWORD",
                       ca: str | None = None) -> str:
    return indent(f"""
user: {auth['EVENTBUS_NATS_USER']}
passwordFrom: {{env: {password_env}}}
tls: {{caFile: '{ca or auth['EVENTBUS_TLS_CA']}'}}
""")


def nkey_yaml(auth: dict[str, str]) -> str:
    return indent(f"""
nkeySeedFile: '{auth['EVENTBUS_NATS_NKEY_SEED_FILE']}'
tls: {{caFile: '{auth['EVENTBUS_TLS_CA']}'}}
""")


async def publish_nats(auth: dict[str, str], subject: str, data: bytes) -> None:
    """Publish through the TLS server as the nkey user (a real client of its own)."""
    nc = await nats.connect(servers=[auth["EVENTBUS_NATS_TLS_URL"]], nkeys_seed=auth["EVENTBUS_NATS_NKEY_SEED_FILE"],
                            tls=ssl.create_default_context(cafile=auth["EVENTBUS_TLS_CA"]), connect_timeout=5,
                            max_reconnect_attempts=1)
    try:
        await nc.publish(subject, data)
        await nc.flush()
    finally:
        await nc.close()


async def wait_ready(rt: Runtime, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if rt.ready():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("runtime not ready")


async def test_nats_tls_user_password_and_nkey_deliver(
    auth: dict[str, str], secrets_env: None, fn: FunctionServer, start_runtime: object,
) -> None:
    subject = f"auth.{uuid.uuid4().hex[:8]}"
    url = auth["EVENTBUS_NATS_TLS_URL"]
    specs = (nats_trigger("password", subject, url, nats_password_yaml(auth))
             + nats_trigger("nkey", subject, url, nkey_yaml(auth)))
    running = await start_runtime(specs)  # type: ignore[operator]
    await wait_ready(running.runtime)
    assert await running.readyz() == 200
    await publish_nats(auth, subject, b"hello")
    await fn.wait_for(lambda: {r.path for r in fn.received} >= {"/auth/password", "/auth/nkey"}, timeout=20,
                      what="the message through the password and the nkey trigger")
    assert sorted((r.path, r.body) for r in fn.received) == [("/auth/nkey", b"hello"), ("/auth/password", b"hello")]


async def test_nats_refusals_are_named_retried_and_do_not_stop_other_triggers(
    auth: dict[str, str], secrets_env: None, fn: FunctionServer, start_runtime: object,
    runtime_log: pytest.LogCaptureFixture,
) -> None:
    subject = f"auth.{uuid.uuid4().hex[:8]}"
    url = auth["EVENTBUS_NATS_TLS_URL"]
    expired = auth["EVENTBUS_NATS_EXPIRED_CERT_URL"]
    specs = (nats_trigger("wrong-password", subject, url, nats_password_yaml(auth, WRONG_PASSWORD_ENV))
             + nats_trigger("untrusted-ca", subject, url,
                            nats_password_yaml(auth, ca=auth["EVENTBUS_TLS_UNTRUSTED_CA"]))
             + nats_trigger("expired-cert", subject, expired, indent(f"tls: {{caFile: '{auth['EVENTBUS_TLS_CA']}'}}"))
             + nats_trigger("healthy", subject, url, nkey_yaml(auth)))
    running = await start_runtime(specs)  # type: ignore[operator]
    await wait_failures(runtime_log, ["auth/wrong-password", "auth/untrusted-ca", "auth/expired-cert"], 2)
    assert_retried_with_backoff(runtime_log, "auth/wrong-password", f"authentication failed for NATS at {url}")
    assert_retried_with_backoff(runtime_log, "auth/untrusted-ca", f"TLS: certificate verify failed for {url}")
    assert_retried_with_backoff(runtime_log, "auth/expired-cert",
                                f"TLS: certificate verify failed for {expired} (certificate has expired)")
    assert await running.readyz() == 503

    # Core NATS keeps nothing for a subscriber that is not there yet: publish until the healthy trigger has it.
    for _ in range(40):
        await publish_nats(auth, subject, b"still-running")
        if fn.received:
            break
        await asyncio.sleep(0.5)
    await fn.wait_for(lambda: any(r.path == "/auth/healthy" for r in fn.received), timeout=5,
                      what="delivery through the healthy trigger while the others fail")
    assert {(r.path, r.body) for r in fn.received} == {("/auth/healthy", b"still-running")}
