"""Kafka I/O with aiokafka: client settings from a Trigger's source (auth, TLS), and a topic writer."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    MessageSizeTooLargeError,
    SaslAuthenticationFailed,
    UnknownTopicOrPartitionError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from connectors.broker_errors import BrokerAuthError, BrokerTlsError, auth_failed_message, tls_failed_message
from schemas.cloudevent import CloudEvent
from schemas.kafka_binding import kafka_key, to_kafka_binary, to_kafka_structured
from schemas.trigger import Sasl, Tls

BOOTSTRAP_ENV = "EVENTBUS_KAFKA_BOOTSTRAP"
METADATA_TIMEOUT = 5.0


class KafkaConfigError(ValueError):
    """A Kafka setting that cannot work (no bootstrap servers, a secret's env var unset, a bad TLS file)."""


class KafkaWriteError(RuntimeError):
    """A record could not be written (broker unreachable, topic missing, timeout).

    `permanent`: trying again will not help until someone acts (topic deleted, not authorised, record
    too large); the caller still retries (nothing is dropped) but says so loudly."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class KafkaRecordTooLarge(KafkaWriteError):
    """The broker (or the producer's `max_request_size`) refuses a record this large."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, permanent=True)
        self.size = size


_PERMANENT_DESPITE_RETRIABLE = (UnknownTopicOrPartitionError,)
"""aiokafka calls these retriable (metadata may catch up), but a deleted topic does not come back alone."""


class KafkaAuthError(BrokerAuthError):
    """`authentication failed for Kafka at <bootstrap>: ...`: the broker rejected the SASL credentials."""


class KafkaTlsError(BrokerTlsError):
    """`TLS: certificate verify failed for <host:port> (...)`, or the broker refused our TLS handshake."""


SASL_REFUSALS = (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError)
DIAGNOSE_TIMEOUT = 10.0


async def diagnose_refusal(bootstrap: str, security: dict[str, Any]) -> BrokerAuthError | BrokerTlsError | None:
    """Why a secured client could not start: KafkaAuthError, KafkaTlsError, or None if neither.

    aiokafka logs the cause of a failed bootstrap and raises only `Unable to bootstrap from [...]`, so this opens
    one connection per bootstrap server with the same settings (TLS handshake, SASL exchange) to learn it.
    """
    if "ssl_context" not in security and "sasl_mechanism" not in security:
        return None
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        host = host.strip("[]")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), **security), DIAGNOSE_TIMEOUT)
        except ssl.SSLError as exc:
            return KafkaTlsError(tls_failed_message(f"{host}:{port}", exc))
        except SASL_REFUSALS as exc:
            detail = str(exc.args[0]) if exc.args and exc.args[0] else type(exc).__name__
            return KafkaAuthError(auth_failed_message("Kafka", bootstrap, detail))
        except (OSError, KafkaError, TimeoutError, ValueError):
            continue  # unreachable or something else: not ours to name
        conn.close()
    return None


async def start_named(start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]], bootstrap: str,
                      security: dict[str, Any]) -> None:
    """Start an aiokafka client (`start`); a start refused for credentials or a certificate raises KafkaAuthError
    or KafkaTlsError naming the server (after `stop`), anything else propagates unchanged."""
    try:
        await start()
    except KafkaError as exc:
        named = await diagnose_refusal(bootstrap, security)
        if named is None:
            raise
        await stop()
        raise named from exc


class NamedErrorsConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An AIOKafkaConsumer whose `start()` names auth and TLS refusals (see `start_named`)."""

    def __init__(self, *, bootstrap: str, security: dict[str, Any], **options: Any) -> None:
        super().__init__(bootstrap_servers=bootstrap, **options, **security)
        self._named = (bootstrap, security)

    async def start(self) -> None:
        await start_named(super().start, self.stop, *self._named)


class NamedErrorsProducer(AIOKafkaProducer):  # type: ignore[misc]
    """An AIOKafkaProducer whose `start()` names auth and TLS refusals (see `start_named`)."""

    def __init__(self, *, bootstrap: str, security: dict[str, Any], **options: Any) -> None:
        super().__init__(bootstrap_servers=bootstrap, **options, **security)
        self._named = (bootstrap, security)

    async def start(self) -> None:
        await start_named(super().start, self.stop, *self._named)


def resolve_bootstrap(servers: list[str], default: str | None) -> str:
    """The spec's servers, else the runtime default (`--kafka` or EVENTBUS_KAFKA_BOOTSTRAP)."""
    if servers:
        return ",".join(servers)
    fallback = default or os.environ.get(BOOTSTRAP_ENV)
    if not fallback:
        raise KafkaConfigError(
            f"no Kafka bootstrap servers: set bootstrapServers in the trigger, pass --kafka, or set {BOOTSTRAP_ENV}"
        )
    return fallback


def _ssl_context(tls: Tls) -> ssl.SSLContext:
    try:
        ctx: ssl.SSLContext = create_ssl_context(cafile=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaConfigError(f"tls: cannot load certificates: {exc}") from exc
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def security_settings(sasl: Sasl | None, tls: Tls | None) -> dict[str, Any]:
    """aiokafka keyword arguments for SASL and TLS; secrets are read from the environment here."""
    out: dict[str, Any] = {}
    if tls is not None:
        out["ssl_context"] = _ssl_context(tls)
    if sasl is not None:
        password = os.environ.get(sasl.password_from.env)
        if password is None:
            raise KafkaConfigError(f"sasl.passwordFrom.env: environment variable {sasl.password_from.env} is not set")
        out.update(
            sasl_mechanism=sasl.mechanism, sasl_plain_username=sasl.username, sasl_plain_password=password
        )
        out["security_protocol"] = "SASL_SSL" if tls is not None else "SASL_PLAINTEXT"
    elif tls is not None:
        out["security_protocol"] = "SSL"
    return out


SESSION_TIMEOUT_MS = 10_000


def make_consumer(
    *, bootstrap: str, group: str, offset_reset: str, security: dict[str, Any], client_id: str,
    revoke_within: float = 0.0,
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: offsets are committed only for settled events.

    `revoke_within`: the longest its revocation callback may take. The group coordinator waits for a member
    to rejoin for its rebalance timeout only, then rebalances without it (its partitions go to others while
    its callback still runs): so the rebalance timeout is the session timeout plus that."""
    return NamedErrorsConsumer(
        rebalance_timeout_ms=SESSION_TIMEOUT_MS + int(revoke_within * 1000),
        bootstrap=bootstrap,
        security=security,
        group_id=group,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset=offset_reset,
        max_poll_interval_ms=600_000,
        session_timeout_ms=SESSION_TIMEOUT_MS,
        heartbeat_interval_ms=1_000,
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1 << 20,
    )


def make_producer(*, bootstrap: str, security: dict[str, Any] | None = None) -> AIOKafkaProducer:
    """An idempotent, acks=all producer (dead letters and replies must not be lost or doubled by retries)."""
    return NamedErrorsProducer(
        bootstrap=bootstrap,
        security=security or {},
        acks="all",
        enable_idempotence=True,
        linger_ms=2,
        request_timeout_ms=15_000,
        max_request_size=8 << 20,
    )


class KafkaTopicWriter:
    """Writes CloudEvents to one topic (binary mode by default), keeping a given key or `partitionkey`."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, *, structured: bool = False,
                 timeout: float = 20.0) -> None:
        self.producer = producer
        self.topic = topic
        self.structured = structured
        self.timeout = timeout
        self.name = f"kafka:{topic}"
        self._topic_known = False

    async def _check_topic(self) -> None:
        """Fail fast (5 s, not the producer's 15 s metadata wait) when the topic does not exist."""
        try:
            await asyncio.wait_for(self.producer.partitions_for(self.topic), METADATA_TIMEOUT)
        except TimeoutError:
            raise KafkaWriteError(f"topic {self.topic!r} does not exist (no metadata after "
                                  f"{METADATA_TIMEOUT:g}s)", permanent=True) from None
        except KafkaError as exc:
            raise KafkaWriteError(f"topic {self.topic!r}: cannot read metadata: {exc!r}",
                                  permanent=_is_permanent(exc)) from exc
        self._topic_known = True

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        if not self._topic_known:
            await self._check_topic()
        if self.structured:
            headers, value = to_kafka_structured(event)
        else:
            headers, value_opt = to_kafka_binary(event)
            value = value_opt if value_opt is not None else b""
        if key is None:
            key = kafka_key(event)
        try:
            fut = await asyncio.wait_for(
                self.producer.send(self.topic, value=value, key=key, headers=headers), self.timeout
            )
            await asyncio.wait_for(fut, self.timeout)
        except TimeoutError as exc:
            self._topic_known = False  # the next try checks the topic first: a deleted one is then named
            raise KafkaWriteError(f"writing to topic {self.topic!r} timed out after {self.timeout:g}s "
                                  "(does the topic exist?)") from exc
        except MessageSizeTooLargeError as exc:
            size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
            raise KafkaRecordTooLarge(f"writing to topic {self.topic!r} failed: record of {size} bytes is "
                                      f"too large: {exc!r}", size=size) from exc
        except KafkaError as exc:
            self._topic_known = False  # check the topic again (fail fast, say if it was deleted) next time
            raise KafkaWriteError(f"writing to topic {self.topic!r} failed: {exc!r}",
                                  permanent=_is_permanent(exc)) from exc


def _is_permanent(exc: KafkaError) -> bool:
    return isinstance(exc, _PERMANENT_DESPITE_RETRIABLE) or not exc.retriable
