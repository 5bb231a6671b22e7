"""Sending a scenario's events and reading back their fate: Kafka/JetStream producers, the dead-letter
topic's ids, and Trigger YAML for the scenarios (every trigger dead-letters to a Kafka topic)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable

import nats
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from nats.js.api import StorageType

from tests.chaos.ledger import Ledger
from tests.integration.support import FunctionServer

KafkaHeaders = list[tuple[str, bytes]]


def ce_headers(eid: str, extra: dict[str, str] | None = None) -> KafkaHeaders:
    headers = [("ce_specversion", b"1.0"), ("ce_id", eid.encode()), ("ce_source", b"/chaos"),
               ("ce_type", b"dev.eventbus.chaos"), ("content-type", b"application/json")]
    headers += [(f"ce_{k}", v.encode()) for k, v in (extra or {}).items()]
    return headers


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1,
                        config: dict[str, str] | None = None) -> None:
    """Create topics and wait until each partition has a leader."""
    names = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1, topic_configs=config or {}) for n in names])
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics(names)
            if all(t["error_code"] == 0 and len(t["partitions"]) == partitions
                   and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics not ready: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


class KafkaSender:
    """Produces CloudEvents (binary mode) with unique ids, `key` = id modulo `keys`, acks=all."""

    def __init__(self, bootstrap: str, topic: str, *, keys: int = 16, max_request_size: int = 1 << 20) -> None:
        self.topic = topic
        self.keys = keys
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                         max_request_size=max_request_size, request_timeout_ms=60000)

    async def __aenter__(self) -> KafkaSender:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send_ids(self, ids: Iterable[str], *, extra: Callable[[int], dict[str, str]] | None = None,
                       partition: Callable[[int], int | None] | None = None, chunk: int = 500) -> None:
        """Send one event per id (data `{"i": n}`), waiting for every ack."""
        futs = []
        for n, eid in enumerate(ids):
            futs.append(await self.producer.send(
                self.topic, value=json.dumps({"i": n}).encode(), key=f"k{n % self.keys}".encode(),
                headers=ce_headers(eid, extra(n) if extra else None),
                partition=partition(n) if partition else None,
            ))
            if len(futs) >= chunk:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)

    async def send_raw(self, value: bytes | None, headers: KafkaHeaders, key: bytes | None = None) -> str:
        """Send one record as is; returns the id eventbus gives it (`<topic>/<partition>/<offset>`)."""
        meta = await (await self.producer.send(self.topic, value=value, key=key, headers=headers))
        return f"{self.topic}/{meta.partition}/{meta.offset}"


async def dead_letter_ids(bootstrap: str, topic: str, *, expect: int = 0, idle: float = 2.0,
                          timeout: float = 60.0) -> list[str]:
    """The `ce_id` of every record in the dead-letter topic: read until `expect` ids arrived and nothing new
    came for `idle` seconds (or `timeout`)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=16 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    ids: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for r in records:
                    eid = dict(r.headers or ()).get("ce_id")
                    ids.append(eid.decode() if eid is not None else f"<no ce_id at offset {r.offset}>")
                    last_new = time.monotonic()
            if len(ids) >= expect and time.monotonic() - last_new >= idle:
                break
    finally:
        await consumer.stop()
    return ids


async def js_stream(url: str, stream: str, subjects: list[str]) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(name=stream, subjects=subjects, storage=StorageType.FILE)
    finally:
        await nc.close()


async def js_send_ids(url: str, subject: str, ids: Iterable[str], *, window: int = 256) -> None:
    """Publish one binary-mode CloudEvent per id to JetStream, waiting for every PubAck."""
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        js = nc.jetstream()
        pending: list[asyncio.Future[object]] = []
        for n, eid in enumerate(ids):
            headers = {"ce-specversion": "1.0", "ce-id": eid, "ce-source": "/chaos", "ce-type": "dev.eventbus.chaos",
                       "ce-datacontenttype": "application/json"}
            pending.append(asyncio.ensure_future(
                js.publish(subject, json.dumps({"i": n}).encode(), headers=headers, timeout=30)))
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await nc.close()


class DeadLetterWatch:
    """Reads a dead-letter topic in the background (from the beginning, no group) into `ids`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.ids: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> DeadLetterWatch:
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                    enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=16 << 20,
                                    fetch_max_bytes=64 << 20, metadata_max_age_ms=2000)
        await consumer.start()

        async def loop() -> None:
            try:
                while True:
                    batch = await consumer.getmany(timeout_ms=300)
                    for records in batch.values():
                        for r in records:
                            eid = dict(r.headers or ()).get("ce_id")
                            self.ids.append(eid.decode() if eid is not None else f"<no ce_id at {r.offset}>")
            finally:
                await consumer.stop()

        self._task = asyncio.create_task(loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def settle_all(fn: FunctionServer, ledger: Ledger, watch: DeadLetterWatch | None, *, timeout: float,
                     quiet: float = 1.0) -> None:
    """Wait until every sent id was delivered or dead-lettered (or `timeout`), then `quiet` seconds more for
    duplicates to show; the ledger then holds what the function and the dead-letter topic saw."""
    deadline = time.monotonic() + timeout

    def refresh() -> None:
        ledger.delivered = list(fn.delivered_ids)
        ledger.dead_lettered = list(watch.ids) if watch is not None else []

    while True:
        refresh()
        if not ledger.lost_ids() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    await asyncio.sleep(quiet)
    refresh()


def kafka_trigger(name: str, topic: str, *, dead_letter: str | None, group: str | None = None,
                  ordering: str = "key", concurrency: int = 32, timeout: str = "5s",
                  retry: str = "{attempts: 3, delay: 10ms, maxDelay: 50ms}", bootstrap: str | None = None) -> str:
    lines = [
        "apiVersion: eventbus.dev/v1alpha1", "kind: Trigger", f"metadata: {{name: {name}, namespace: chaos}}",
        "spec:", "  source:", "    kafka:", f"      topics: [{topic}]", f"      ordering: {ordering}",
        "      initialOffset: earliest",
    ]
    if group:
        lines.append(f"      consumerGroup: {group}")
    if bootstrap:
        lines.append(f"      bootstrapServers: ['{bootstrap}']")
    lines += [f"  function: {{name: {name}}}", "  delivery:", f"    concurrency: {concurrency}",
              f"    timeout: {timeout}", f"    retry: {retry}"]
    if dead_letter:
        lines.append(f"    deadLetter: {{kafka: {{topic: {dead_letter}}}}}")
    return "\n".join(lines) + "\n"


def nats_trigger(name: str, subject: str, *, stream: str | None, dead_letter: str | None,
                 concurrency: int = 32, timeout: str = "5s", ordering: str = "partition",
                 retry: str = "{attempts: 3, delay: 10ms, maxDelay: 50ms}", servers: str | None = None) -> str:
    lines = [
        "apiVersion: eventbus.dev/v1alpha1", "kind: Trigger", f"metadata: {{name: {name}, namespace: chaos}}",
        "spec:", "  source:", "    nats:", f"      subject: '{subject}'", f"      ordering: {ordering}",
    ]
    if servers:
        lines.append(f"      servers: ['{servers}']")
    if stream:
        lines.append(f"      jetstream: {{stream: {stream}}}")
    lines += [f"  function: {{name: {name}}}", "  delivery:", f"    concurrency: {concurrency}",
              f"    timeout: {timeout}", f"    retry: {retry}"]
    if dead_letter:
        lines.append(f"    deadLetter: {{kafka: {{topic: {dead_letter}}}}}")
    return "\n".join(lines) + "\n"
