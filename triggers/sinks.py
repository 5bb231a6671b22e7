"""Where dead letters and replies go: a small protocol, the Kafka/NATS/HTTP sinks, and `GuardedSink`, which
retries a failing write until it succeeds and makes a failure that will not pass by itself loud.

A write fails either transiently (broker restarting, timeout, 5xx) or permanently (topic deleted, not
authorised, 4xx): both are retried (a sink failure stalls, it never drops), but a permanent one is
counted as such, logged naming the sink, and marks the trigger degraded until a write succeeds. A dead
letter too large for its sink is written again without its data (`deadletterdataomitted` = data size).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

from aiokafka import AIOKafkaProducer

from connectors.gateway import GatewayClient, display_url
from connectors.kafka import KafkaRecordTooLarge, KafkaTopicWriter, KafkaWriteError
from connectors.nats_publish import NatsPayloadTooLarge, NatsSubjectWriter, NatsWriteError
from schemas import http_binding
from schemas.cloudevent import CloudEvent
from schemas.sink_cluster import KafkaCluster, NatsCluster, SinkRole, kafka_cluster, nats_cluster, sink_spec
from schemas.trigger import Trigger
from triggers.retry import is_retryable

log = logging.getLogger("eventbus.sinks")

RETRY_MAX_DELAY = 5.0
DATA_OMITTED = "deadletterdataomitted"


class SinkError(RuntimeError):
    """A write to a sink failed; `permanent` when retrying cannot help until someone acts."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class SinkTooLarge(SinkError):
    """The sink refuses a message this large (Kafka MessageSizeTooLarge, NATS max payload, HTTP 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class EventSink(Protocol):
    name: str

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None: ...


class KafkaSink:
    """A Kafka topic as a sink; `key` (the original record key) wins over `partitionkey`."""

    def __init__(self, writer: KafkaTopicWriter) -> None:
        self.writer = writer
        self.name = writer.name

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        try:
            await self.writer.send(event, key)
        except KafkaRecordTooLarge as exc:
            raise SinkTooLarge(str(exc)) from exc
        except KafkaWriteError as exc:
            raise SinkError(str(exc), permanent=exc.permanent) from exc


class NatsSink:
    """A NATS subject as a sink: JetStream (waits for the PubAck) when a stream covers it, else core NATS."""

    def __init__(self, writer: NatsSubjectWriter) -> None:
        self.writer = writer
        self.name = writer.name

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        try:
            await self.writer.send(event, key)
        except NatsPayloadTooLarge as exc:
            raise SinkTooLarge(str(exc)) from exc
        except NatsWriteError as exc:
            raise SinkError(str(exc), permanent=exc.permanent) from exc


class HttpSink:
    """An HTTP endpoint as a sink (binary mode); any non-2xx is a failed write, a 4xx other than 408/429
    a permanent one."""

    def __init__(self, gateway: GatewayClient, url: str, timeout: float = 30.0) -> None:
        self.gateway = gateway
        self.url = url
        self.timeout = timeout
        self.name = f"url:{display_url(url)}"

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        headers, body = http_binding.to_binary(event)
        resp = await self.gateway.post(self.url, headers, body, timeout=self.timeout)
        if resp.ok:
            return
        message = f"POST {display_url(self.url)}: {resp.error or resp.status}"
        if resp.status == 413:
            raise SinkTooLarge(message)
        raise SinkError(message, permanent=resp.status != 0 and not is_retryable(resp.status))


ErrorCounter = Callable[[Literal["permanent", "transient"]], None]


class GuardedSink:
    """A sink whose `send` returns only once the event is written: it retries with capped backoff, logs
    each failed step naming the sink and the error, counts it by kind, and holds `degraded` (a reason)
    while writes fail. Dead letters too large for the sink go again without their data."""

    def __init__(self, sink: EventSink, *, trigger: str, role: str, count_error: ErrorCounter,
                 omit_data_if_too_large: bool) -> None:
        self.sink = sink
        self.name = sink.name
        self.trigger = trigger
        self.role = role
        self.count_error = count_error
        self.omit_data_if_too_large = omit_data_if_too_large
        self.degraded: str | None = None

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        n = 0
        while True:
            try:
                await self.sink.send(event, key)
                if self.degraded is not None:
                    log.info(f"{self.role} sink writes again", extra={"trigger": self.trigger, "sink": self.name})
                    self.degraded = None
                return
            except SinkError as exc:
                kind: Literal["permanent", "transient"] = "permanent" if exc.permanent else "transient"
                self.count_error(kind)
                if (isinstance(exc, SinkTooLarge) and self.omit_data_if_too_large and event.data is not None
                        and DATA_OMITTED not in event.attributes):
                    size = len(event.data)
                    log.warning(f"{self.role} too large for its sink: writing it without its data",
                                extra={"trigger": self.trigger, "sink": self.name, "event_id": event.id,
                                       "data_bytes": size, "error": str(exc)})
                    event = CloudEvent({**event.attributes, DATA_OMITTED: size}, None)
                    continue
                n += 1
                delay = min(RETRY_MAX_DELAY, 0.1 * (2 ** min(n, 10)))
                self.degraded = f"{self.role} sink {self.name}: {kind} error: {exc}"
                log.error(
                    f"{self.role} sink {self.name} write failed ({kind}); retrying, nothing is settled past "
                    "this event" + ("; it will not pass until someone fixes the sink" if exc.permanent else ""),
                    extra={"trigger": self.trigger, "sink": self.name, "kind": kind, "event_id": event.id,
                           "error": str(exc), "attempt": n, "retry_in": round(delay, 3)},
                )
                await asyncio.sleep(delay)


KafkaProducerFor = Callable[[KafkaCluster], Awaitable[AIOKafkaProducer]]
NatsSinkFor = Callable[[str, NatsCluster], Awaitable[EventSink]]


async def open_sink(
    trigger: Trigger,
    role: SinkRole,
    *,
    gateway: GatewayClient,
    kafka_producer: KafkaProducerFor,
    nats_sink: NatsSinkFor,
    kafka_default: str | None,
    nats_default: list[str],
    http_timeout: float = 30.0,
) -> EventSink | None:
    """The trigger's `role` sink on its cluster (see schemas.sink_cluster), unguarded; None when it has none.

    Raises `SinkClusterError` naming the field when the sink reaches no cluster."""
    spec = sink_spec(trigger, role)
    if spec is None:
        return None
    if spec.kafka is not None:
        cluster = kafka_cluster(trigger, role, spec.kafka, kafka_default)
        return KafkaSink(KafkaTopicWriter(await kafka_producer(cluster), spec.kafka.topic))
    if spec.nats is not None:
        return await nats_sink(spec.nats.subject, nats_cluster(trigger, role, spec.nats, nats_default))
    assert spec.url is not None
    return HttpSink(gateway, spec.url, timeout=http_timeout)


async def build_sink(
    trigger: Trigger,
    role: SinkRole,
    *,
    gateway: GatewayClient,
    kafka_producer: KafkaProducerFor,
    nats_sink: NatsSinkFor,
    kafka_default: str | None,
    nats_default: list[str],
    count_error: ErrorCounter,
) -> GuardedSink | None:
    """`open_sink`, guarded: writes retried until they succeed, failures logged and counted (a dead letter
    too large for its sink goes without its data)."""
    sink = await open_sink(trigger, role, gateway=gateway, kafka_producer=kafka_producer, nats_sink=nats_sink,
                           kafka_default=kafka_default, nats_default=nats_default)
    if sink is None:
        return None
    what = "dead-letter" if role == "dead_letter" else role
    return GuardedSink(sink, trigger=trigger.key, role=what, count_error=count_error,
                       omit_data_if_too_large=role == "dead_letter")
