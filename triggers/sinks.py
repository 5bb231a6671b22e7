"""Where dead letters and replies go: a small protocol and the builder from a Trigger's `Sink` spec."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from aiokafka import AIOKafkaProducer

from connectors.gateway import GatewayClient, display_url
from connectors.kafka import KafkaTopicWriter, KafkaWriteError
from connectors.nats_publish import NatsSubjectWriter, NatsWriteError
from schemas import http_binding
from schemas.cloudevent import CloudEvent
from schemas.trigger import Sink


class SinkError(RuntimeError):
    """A write to a sink failed; the caller retries (a sink outage stalls, never drops)."""


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
        except KafkaWriteError as exc:
            raise SinkError(str(exc)) from exc


class NatsSink:
    """A NATS subject as a sink: JetStream (waits for the PubAck) when a stream covers it, else core NATS."""

    def __init__(self, writer: NatsSubjectWriter) -> None:
        self.writer = writer
        self.name = writer.name

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        try:
            await self.writer.send(event, key)
        except NatsWriteError as exc:
            raise SinkError(str(exc)) from exc


class HttpSink:
    """An HTTP endpoint as a sink (binary mode); any non-2xx is a failed write."""

    def __init__(self, gateway: GatewayClient, url: str, timeout: float = 30.0) -> None:
        self.gateway = gateway
        self.url = url
        self.timeout = timeout
        self.name = f"url:{display_url(url)}"

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        headers, body = http_binding.to_binary(event)
        resp = await self.gateway.post(self.url, headers, body, timeout=self.timeout)
        if not resp.ok:
            raise SinkError(f"POST {display_url(self.url)}: {resp.error or resp.status}")


ProducerFor = Callable[[list[str]], Awaitable[AIOKafkaProducer]]
NatsSinkFor = Callable[[str, list[str]], Awaitable[EventSink]]


async def build_sink(
    spec: Sink,
    *,
    gateway: GatewayClient,
    kafka_producer: ProducerFor,
    nats_sink: NatsSinkFor | None = None,
) -> EventSink:
    """Resolve a `Sink` spec into a live sink using the runtime's shared clients."""
    if spec.kafka is not None:
        producer = await kafka_producer(spec.kafka.bootstrap_servers)
        return KafkaSink(KafkaTopicWriter(producer, spec.kafka.topic))
    if spec.nats is not None:
        if nats_sink is None:
            raise SinkError("NATS sinks need a NATS connection; this runtime has none configured")
        return await nats_sink(spec.nats.subject, spec.nats.servers)
    assert spec.url is not None
    return HttpSink(gateway, spec.url)
