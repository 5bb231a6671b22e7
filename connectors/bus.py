"""Writing CloudEvents to a named topic of the bus (a Kafka topic, or a NATS subject stored by JetStream).

Used by the HTTP ingress (`POST /topics/<name>`, async HTTP triggers) and by the producer API. Each
`publish` returns only after the broker acknowledged every event (Kafka acks=all; JetStream PubAck), so
a caller may answer 2xx afterwards and nothing accepted is lost. Failures are typed so the ingress can
map them: BusUnavailable -> 503, NoSuchTopic -> 404, EventTooLarge -> 413, InvalidTopic -> 400.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import nats.errors
import nats.js.errors
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from connectors.http_ingress import BusUnavailable, EventTooLarge, InvalidTopic, NoSuchTopic
from schemas.cloudevent import CloudEvent
from schemas.kafka_binding import kafka_key, to_kafka_binary, to_kafka_structured
from schemas.nats_binding import to_nats_binary, to_nats_structured

_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_NATS_TOKEN = re.compile(r"[^\s.*>]+")


def check_kafka_topic(name: str) -> None:
    if not _KAFKA_TOPIC.fullmatch(name) or name in (".", ".."):
        raise InvalidTopic(f"{name!r} is not a valid Kafka topic name (1-249 of A-Z a-z 0-9 . _ -)")


def check_nats_subject(name: str) -> None:
    if not name or not all(_NATS_TOKEN.fullmatch(t) for t in name.split(".")):
        raise InvalidTopic(f"{name!r} is not a valid NATS subject to publish to (dot-separated tokens, "
                           "no wildcards or whitespace)")


class KafkaTopics:
    """Publishes to Kafka topics through a shared producer (the runtime's, or one of its own)."""

    def __init__(self, producer: Callable[[], Awaitable[AIOKafkaProducer]], *, timeout: float = 10.0,
                 structured: bool = False) -> None:
        self._producer = producer
        self.timeout = timeout
        self.structured = structured
        self._missing: dict[str, float] = {}

    async def _get(self) -> AIOKafkaProducer:
        try:
            return await asyncio.wait_for(self._producer(), self.timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BusUnavailable(f"Kafka is unreachable: {exc!r}") from exc

    async def _check_topic(self, producer: AIOKafkaProducer, topic: str) -> None:
        """The broker does not auto-create topics: answer 404 quickly instead of waiting out a metadata
        timeout. A miss is cached for a second so a burst to a wrong name does not storm the broker."""
        if topic in producer.client.cluster.topics():
            return
        missed = self._missing.get(topic)
        if missed is not None and time.monotonic() - missed < 1.0:
            raise NoSuchTopic(f"Kafka topic {topic!r} does not exist")
        try:
            md = await asyncio.wait_for(producer.client.fetch_all_metadata(), self.timeout)
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BusUnavailable(f"Kafka metadata request failed: {exc!r}") from exc
        if topic not in md.topics():
            self._missing[topic] = time.monotonic()
            raise NoSuchTopic(f"Kafka topic {topic!r} does not exist")
        self._missing.pop(topic, None)

    async def publish(self, topic: str, events: Sequence[CloudEvent]) -> None:
        check_kafka_topic(topic)
        producer = await self._get()
        await self._check_topic(producer, topic)
        try:
            futures = []
            for ev in events:
                if self.structured:
                    headers, value = to_kafka_structured(ev)
                else:
                    headers, value_opt = to_kafka_binary(ev)
                    value = value_opt if value_opt is not None else b""
                futures.append(await asyncio.wait_for(
                    producer.send(topic, value=value, key=kafka_key(ev), headers=headers), self.timeout))
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except MessageSizeTooLargeError as exc:
            raise EventTooLarge(f"Kafka refuses the record size: {exc!r}") from exc
        except TimeoutError as exc:
            raise BusUnavailable(f"no ack from Kafka for topic {topic!r} within {self.timeout:g}s") from exc
        except KafkaError as exc:
            raise BusUnavailable(f"writing to Kafka topic {topic!r} failed: {exc!r}") from exc


NoStreamHook = Callable[[str], Awaitable[bool]]
"""Called when no JetStream stream covers a subject; returns True if it made one cover it (embedded mode)."""


class NatsTopics:
    """Publishes to NATS subjects with JetStream (publish with ack): a subject with no stream is a 404."""

    def __init__(self, client: Callable[[], Awaitable[NatsClient]], *, timeout: float = 5.0,
                 connect_timeout: float = 3.0, mode: Literal["binary", "structured"] = "binary",
                 on_no_stream: NoStreamHook | None = None) -> None:
        self._client = client
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.mode = mode
        self.on_no_stream = on_no_stream
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None

    async def _get(self) -> NatsClient:
        nc = self._nc
        if nc is not None and not nc.is_closed:  # the hot path: no task, no lock per request
            if not nc.is_connected:
                raise BusUnavailable("NATS connection is down (reconnecting)")
            return nc
        try:
            nc = await asyncio.wait_for(self._client(), self.connect_timeout)
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            raise BusUnavailable(f"NATS is unreachable: {exc!r}") from exc
        if not nc.is_connected:
            raise BusUnavailable("NATS connection is down (reconnecting)")
        self._nc, self._js = nc, nc.jetstream()
        return nc

    async def publish(self, topic: str, events: Sequence[CloudEvent]) -> None:
        check_nats_subject(topic)
        await self._get()
        js = self._js
        assert js is not None
        encode = to_nats_structured if self.mode == "structured" else to_nats_binary

        async def one(ev: CloudEvent) -> None:
            headers, payload = encode(ev)
            await js.publish(topic, payload, headers=headers, timeout=self.timeout)

        async def all_events() -> None:
            if len(events) == 1:  # the common case: no gather, no extra task
                await one(events[0])
            else:
                await asyncio.gather(*(one(ev) for ev in events))

        try:
            try:
                await all_events()
            except nats.js.errors.NoStreamResponseError:
                if self.on_no_stream is None or not await self.on_no_stream(topic):
                    raise NoSuchTopic(f"no JetStream stream covers subject {topic!r}") from None
                await all_events()
        except NoSuchTopic:
            raise
        except nats.errors.MaxPayloadError as exc:
            raise EventTooLarge(f"NATS refuses the message size: {exc!r}") from exc
        except nats.js.errors.NoStreamResponseError as exc:
            raise NoSuchTopic(f"no JetStream stream covers subject {topic!r}") from exc
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            raise BusUnavailable(f"no JetStream ack for {topic!r} within {self.timeout:g}s") from exc
        except (nats.errors.Error, OSError) as exc:
            raise BusUnavailable(f"publishing to NATS subject {topic!r} failed: {exc!r}") from exc
