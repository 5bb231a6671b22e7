"""The Kafka trigger controller: consume, decode, order, settle, commit only what is settled."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from connectors.kafka import make_consumer, resolve_bootstrap, security_settings
from schemas.errors import SchemaError
from schemas.kafka_binding import from_kafka, wrap_kafka_record
from schemas.trigger import KafkaSource, Trigger
from triggers.delivery import Pipeline
from triggers.offsets import PartitionOffsets
from triggers.ordering import LaneExecutor

log = logging.getLogger("eventbus.kafka")

DEFAULT_EVENT_TYPE = "dev.eventbus.kafka.record"
COMMIT_INTERVAL = 0.5
MISSING_TOPIC_CHECK = 5.0


class KafkaUnreachable(ConnectionError):
    """The consumer could not connect to its bootstrap servers (the runtime retries with backoff)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaTrigger) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.owner.on_assigned(list(assigned))
        log.info("partitions assigned", extra={"trigger": self.owner.trigger.key,
                                               "partitions": [f"{tp.topic}/{tp.partition}" for tp in assigned]})


class KafkaTrigger:
    """Runs one Kafka trigger until stopped; safe against crashes (at least once) and rebalances."""

    def __init__(self, trigger: Trigger, pipeline: Pipeline, *, default_bootstrap: str | None = None,
                 client_id: str = "eventbus") -> None:
        src = trigger.spec.source.kafka
        assert src is not None
        self.trigger = trigger
        self.source: KafkaSource = src
        self.pipeline = pipeline
        self.bootstrap = resolve_bootstrap(src.bootstrap_servers, default_bootstrap)
        self.group = src.group_for(trigger.key)
        self.client_id = client_id
        self.event_type = trigger.spec.event.type or DEFAULT_EVENT_TYPE
        self._source_override = trigger.spec.event.source
        self.executor = LaneExecutor(trigger.spec.delivery.concurrency)
        self.offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._metrics = pipeline.metrics
        self._generation = 0
        self._running: dict[TopicPartition, int] = {}
        self.lag = 0
        self.ready = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, grace: float = 30.0) -> None:
        """Consume until `stop()`; then drain in-flight work for up to `grace` seconds and commit."""
        # A rerun after a crash starts clean: the new consumer re-reads from the committed offsets.
        self.ready.clear()
        self.offsets.clear()
        self._running.clear()
        self._generation += 1
        consumer = make_consumer(
            bootstrap=self.bootstrap,
            group=self.group,
            offset_reset=self.source.initial_offset,
            security=security_settings(self.source.sasl, self.source.tls),
            client_id=f"{self.client_id}-{self.trigger.metadata.name}",
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()  # else the half-started client leaks its connections and tasks
            raise KafkaUnreachable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        self._consumer = consumer
        commit_task = asyncio.create_task(self._commit_loop())
        try:
            consumer.subscribe(self.source.topics, listener=_Rebalance(self))
            self.ready.set()
            await self._fetch_loop(consumer)
            try:
                await asyncio.wait_for(self.executor.wait_idle(), grace)
            except TimeoutError:
                log.warning("grace period over; abandoning in-flight events (they will be redelivered)",
                            extra={"trigger": self.trigger.key, "in_flight": self.executor.outstanding})
                await self.executor.cancel_all()
        finally:
            commit_task.cancel()
            await asyncio.gather(commit_task, return_exceptions=True)
            try:
                await self._commit()
            except KafkaError as exc:
                log.error("final commit failed", extra={"trigger": self.trigger.key, "error": repr(exc)})
            await self.executor.cancel_all()
            await consumer.stop()
            self._consumer = None

    def stop(self) -> None:
        self._stopping.set()

    # --- fetching -----------------------------------------------------------------------------

    async def _fetch_loop(self, consumer: AIOKafkaConsumer) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=1000, max_records=500))
                await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
                if not fetch.done():
                    fetch.cancel()
                    await asyncio.gather(fetch, return_exceptions=True)
                    break
                generation = self._generation
                for tp, records in fetch.result().items():
                    for record in records:
                        if self._stopping.is_set() or generation != self._generation:
                            break  # stopping, or revoked meanwhile: the next owner reads the rest
                        await self._submit(tp, record, generation)
        finally:
            stop.cancel()

    async def _submit(self, tp: TopicPartition, record: ConsumerRecord[Any, Any], generation: int) -> None:
        tracker = self.offsets.get(tp)
        if tracker is None:
            tracker = self.offsets[tp] = PartitionOffsets()
        ordering = self.source.ordering
        lane: Hashable | None
        if ordering == "partition":
            lane = tp
        elif ordering == "key":
            lane = (tp, record.key)
        else:
            lane = None
        offset = record.offset
        tracker.add(offset)
        running = self._running

        async def job() -> None:
            if generation != self._generation:
                return  # fetched before a revocation: not ours to settle any more
            running[tp] = running.get(tp, 0) + 1
            try:
                await self._handle(tp, record)
                tracker.settle(offset)
            finally:
                running[tp] -= 1

        await self.executor.submit(lane, tp, job)

    async def _handle(self, tp: TopicPartition, record: ConsumerRecord[Any, Any]) -> None:
        headers = list(record.headers or ())
        source = self._source_override or f"kafka://{tp.topic}"
        try:
            event = from_kafka(headers, record.value)
        except SchemaError as exc:
            ctype = next((v.decode("utf-8", "replace") for k, v in headers if k.lower() == "content-type"), None)
            await self.pipeline.settle_undecodable(
                id=f"{tp.topic}/{tp.partition}/{record.offset}", source=source, raw=record.value,
                content_type=ctype, reason=str(exc), key=record.key,
            )
            return
        if event is None:
            event = wrap_kafka_record(
                topic=tp.topic, partition=tp.partition, offset=record.offset, timestamp_ms=record.timestamp,
                key=record.key, headers=headers, value=record.value, event_type=self.event_type,
                event_source=source,
            )
        await self.pipeline.settle(event, record.key)

    # --- committing ---------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        checked_topics_at = time.monotonic() + MISSING_TOPIC_CHECK
        while True:
            await asyncio.sleep(COMMIT_INTERVAL)
            if checked_topics_at and time.monotonic() >= checked_topics_at:
                checked_topics_at = 0.0
                await self._warn_missing_topics()
            try:
                await self._commit()
                self._update_lag()
            except KafkaError as exc:
                log.warning("commit failed; will retry", extra={"trigger": self.trigger.key, "error": repr(exc)})

    async def _warn_missing_topics(self) -> None:
        """A subscription to a topic that does not exist waits silently in Kafka: say so, once."""
        consumer = self._consumer
        if consumer is None or consumer.assignment():
            return
        try:
            existing = await consumer.topics()
        except KafkaError:
            return
        for topic in self.source.topics:
            if topic not in existing:
                log.warning("source topic does not exist; waiting for it to be created",
                            extra={"trigger": self.trigger.key, "topic": topic, "bootstrap": self.bootstrap})

    async def _commit(self, only: list[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            assigned = consumer.assignment()
            todo = {
                tp: t.position for tp, t in self.offsets.items()
                if t.dirty and t.position is not None and (tp in only if only is not None else tp in assigned)
            }
            if not todo:
                return
            await consumer.commit({tp: OffsetAndMetadata(pos, "") for tp, pos in todo.items()})
            gauge = self._metrics.family.committed_offset
            for tp, pos in todo.items():
                self.offsets[tp].mark_committed(pos)
                gauge.labels(self.trigger.key, tp.topic, str(tp.partition)).set(pos)

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        total = 0
        end_gauge = self._metrics.family.log_end_offset
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            end_gauge.labels(self.trigger.key, tp.topic, str(tp.partition)).set(end)
            t = self.offsets.get(tp)
            if t is None or t.committed is None:
                continue  # nothing committed by us yet: position unknown until the first commit
            total += max(0, end - t.committed)
        self._metrics.lag.set(total)
        self.lag = total

    async def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Learn where each new partition starts, so lag is right before the first commit (KEDA's rule: no
        committed offset counts from the log start with `earliest`, from the end with `latest`)."""
        consumer = self._consumer
        if consumer is None or not assigned:
            return
        try:
            starts = (await consumer.beginning_offsets(assigned) if self.source.initial_offset == "earliest"
                      else await consumer.end_offsets(assigned))
            for tp in assigned:
                committed = await consumer.committed(tp)
                tracker = self.offsets.get(tp)
                if tracker is None:
                    tracker = self.offsets[tp] = PartitionOffsets()
                if tracker.committed is None:
                    tracker.mark_committed(committed if committed is not None else starts.get(tp, 0))
        except KafkaError as exc:
            log.warning("could not read committed offsets; lag is unknown until the first commit",
                        extra={"trigger": self.trigger.key, "error": repr(exc)})

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Drop queued work of revoked partitions, wait for what runs, then commit their settled offsets."""
        self._generation += 1
        if not revoked:
            return
        for tp in revoked:
            self.executor.discard_group(tp)
        deadline = time.monotonic() + self.trigger.spec.delivery.timeout + 5
        while any(self._running.get(tp, 0) > 0 for tp in revoked) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        try:
            await self._commit(only=revoked)
        except KafkaError as exc:
            log.error("commit on revocation failed", extra={"trigger": self.trigger.key, "error": repr(exc)})
        for tp in revoked:
            self.offsets.pop(tp, None)
            self._running.pop(tp, None)
        log.info("partitions revoked", extra={"trigger": self.trigger.key,
                                              "partitions": [f"{tp.topic}/{tp.partition}" for tp in revoked]})
