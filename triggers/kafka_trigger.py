"""The Kafka trigger: an adapter of one consumer group to the source driver (`triggers.driver`).

Offsets are committed only up to the highest contiguous settled offset of each partition. Flow control
is per partition: a partition whose queue is full is paused at the consumer, the others keep fetching.
On revocation the driver halts the revoked partitions' running events (the attempt in flight finishes, no
other starts; cancelled only past `delivery.timeout` + REVOKE_MARGIN) before their settled offsets are
committed and the partitions are released; the consumer's rebalance timeout allows for that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from operator import attrgetter
from typing import Any, TypeAlias, cast

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from connectors.kafka import make_consumer, resolve_bootstrap, security_settings
from schemas.cloudevent import CloudEvent
from schemas.kafka_binding import from_kafka, wrap_kafka_record
from schemas.trigger import KafkaSource, Trigger
from triggers.delivery import Pipeline
from triggers.driver import REVOKE_MARGIN, SourceDriver
from triggers.metrics import TriggerMetrics
from triggers.offsets import PartitionOffsets
from triggers.source import RawInput, Revoke, SourceUnreachable

_OFFSET = attrgetter("offset")

log = logging.getLogger("eventbus.kafka")

DEFAULT_EVENT_TYPE = "dev.eventbus.kafka.record"
COMMIT_INTERVAL = 0.5
MISSING_TOPIC_CHECK = 5.0
PROBE_SKIP = 2.0

Record: TypeAlias = "ConsumerRecord[Any, Any]"


class KafkaUnreachable(SourceUnreachable):
    """The consumer could not connect to its bootstrap servers (the driver retries with backoff)."""


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: KafkaAdapter) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.owner.on_revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.owner.on_assigned(list(assigned))
        log.info("partitions assigned", extra={"trigger": self.owner.trigger_key,
                                               "partitions": [f"{tp.topic}/{tp.partition}" for tp in assigned]})


class KafkaAdapter:
    """`Source[ConsumerRecord]` for one Kafka trigger: groups are partitions."""

    redelivers = False
    pauses_groups = True

    def __init__(self, trigger: Trigger, metrics: TriggerMetrics, *, default_bootstrap: str | None = None,
                 client_id: str = "eventbus") -> None:
        src = trigger.spec.source.kafka
        assert src is not None
        self.trigger = trigger
        self.trigger_key = trigger.key
        self.source: KafkaSource = src
        self.bootstrap = resolve_bootstrap(src.bootstrap_servers, default_bootstrap)
        self.broker = f"Kafka at {self.bootstrap}"
        self.group_id = src.group_for(trigger.key)
        self.client_id = client_id
        self.event_type = trigger.spec.event.type or DEFAULT_EVENT_TYPE
        self._source_override = trigger.spec.event.source
        self.ordering = src.ordering
        self.lane_is_group = src.ordering == "partition"
        """The driver may use `group(msg)` as the lane, without calling `lane` (one call less per record)."""
        self.offsets: dict[TopicPartition, PartitionOffsets] = {}
        # the same dict, looked up with plain `(topic, partition)` tuples on the hot path (equal to the keys)
        self._trackers = cast("dict[tuple[str, int], PartitionOffsets]", self.offsets)
        self._consumer: AIOKafkaConsumer | None = None
        self._commit_lock = asyncio.Lock()
        self._metrics = metrics
        self._generation = 0
        self._batch_generation = 0
        self._last_records = 0.0
        self._revoke: Revoke | None = None
        self._paused: set[TopicPartition] = set()
        self._resumed: asyncio.Event | None = None
        self.lag = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def open(self, revoke: Revoke) -> None:
        # A reopen after a failure starts clean: the new consumer re-reads from the committed offsets.
        self.offsets.clear()
        self._paused.clear()
        self._generation += 1
        self._revoke = revoke
        consumer = make_consumer(
            bootstrap=self.bootstrap,
            group=self.group_id,
            offset_reset=self.source.initial_offset,
            security=security_settings(self.source.sasl, self.source.tls),
            client_id=f"{self.client_id}-{self.trigger.metadata.name}",
            revoke_within=self.trigger.spec.delivery.timeout + REVOKE_MARGIN,
        )
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()  # else the half-started client leaks its connections and tasks
            raise KafkaUnreachable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc
        self._consumer = consumer
        consumer.subscribe(self.source.topics, listener=_Rebalance(self))

    async def close(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        try:
            await self._commit()
        except KafkaError as exc:
            log.error("final commit failed", extra={"trigger": self.trigger_key, "error": repr(exc)})
        self._generation += 1
        self._revoke = None  # the driver's items are all cancelled or settled by now
        try:
            await consumer.stop()
        except Exception as exc:
            log.warning("consumer stop failed", extra={"trigger": self.trigger_key, "error": repr(exc)})
        self._consumer = None

    async def stop_intake(self) -> Sequence[Record]:
        return ()

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions the consumer holds right now (empty while not connected)."""
        consumer = self._consumer
        return frozenset(consumer.assignment()) if consumer is not None else frozenset()

    async def probe(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        if time.monotonic() - self._last_records < PROBE_SKIP:
            return  # records arrived just now: the broker answers, no need to ask it
        try:
            await consumer.topics()  # a metadata round trip to any broker
        except KafkaError as exc:
            raise KafkaUnreachable(f"cannot reach Kafka at {self.bootstrap}: {exc}") from exc

    # --- fetching -----------------------------------------------------------------------------

    async def fetch(self, limit: int) -> Sequence[Record]:
        consumer = self._consumer
        assert consumer is not None
        paused = self._paused
        if not paused:
            batch = await consumer.getmany(timeout_ms=1000, max_records=limit)
        else:
            # Only the partitions with room: a paused partition's records already fetched stay in the
            # consumer's buffer (asking for them while it is paused would make aiokafka drop the buffer and
            # fetch it again after `resume`), and the consumer fetches no more of it.
            active = [tp for tp in consumer.assignment() if tp not in paused]
            batch = await self._getmany_until_resumed(consumer, active, limit)
        # aiokafka hands out records only while no reassignment is in progress; from here on, a
        # revocation before the driver submits them makes them stale (see `current`)
        self._batch_generation = self._generation
        if not batch:
            return ()
        self._last_records = time.monotonic()
        out: list[Record] = []
        offsets = self.offsets
        for tp, records in batch.items():
            if not records:
                continue
            tracker = offsets.get(tp)
            if tracker is None:
                tracker = offsets[tp] = PartitionOffsets()
            tracker.add_all(map(_OFFSET, records))
            out.extend(records)
        return out

    async def _getmany_until_resumed(self, consumer: AIOKafkaConsumer, active: list[TopicPartition],
                                     limit: int) -> dict[TopicPartition, list[Record]]:
        """`getmany` over `active` partitions (waiting at most a second), cut short when a paused partition
        resumes: its buffered records are then due at once. Cancelling a waiting `getmany` takes no record."""
        resumed = self._resumed = asyncio.Event()
        if not active:  # every partition paused: wait for room
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await resumed.wait()
            return {}
        waiter = asyncio.ensure_future(resumed.wait())
        getter = asyncio.ensure_future(consumer.getmany(*active, timeout_ms=1000, max_records=limit))
        try:
            await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not getter.done():
                getter.cancel()
                await asyncio.gather(getter, return_exceptions=True)
        if getter.cancelled():
            return {}
        got: dict[TopicPartition, list[Record]] = getter.result()
        return got

    def current(self) -> bool:
        return self._batch_generation == self._generation

    group: Callable[[Record], Hashable] = staticmethod(attrgetter("topic", "partition"))
    """`(topic, partition)`: a plain tuple equals (and hashes like) the `TopicPartition` named tuple aiokafka
    hands to revocations, and costs a fraction of one to build for every record (an attribute getter: no
    Python frame)."""

    def lane(self, msg: Record, event: CloudEvent | None) -> Hashable | None:
        ordering = self.ordering
        if ordering == "partition":
            return (msg.topic, msg.partition)
        if ordering == "key":
            return (msg.topic, msg.partition, msg.key)
        return None

    def _event_source(self, topic: str) -> str:
        return self._source_override or f"kafka://{topic}"

    def decode(self, msg: Record) -> CloudEvent:
        headers = msg.headers or ()
        event = from_kafka(headers, msg.value)
        if event is None:
            event = wrap_kafka_record(
                topic=msg.topic, partition=msg.partition, offset=msg.offset, timestamp_ms=msg.timestamp,
                key=msg.key, headers=list(headers), value=msg.value, event_type=self.event_type,
                event_source=self._event_source(msg.topic),
            )
        return event

    def raw(self, msg: Record) -> RawInput:
        headers = msg.headers or ()
        ctype = next((v.decode("utf-8", "replace") for k, v in headers if k.lower() == "content-type" and v), None)
        return RawInput(id=f"{msg.topic}/{msg.partition}/{msg.offset}", source=self._event_source(msg.topic),
                        data=msg.value, content_type=ctype, key=msg.key)

    key: Callable[[Record], bytes | None] = staticmethod(attrgetter("key"))
    """The record key, for a dead letter (an attribute getter: no Python frame, it runs for every event)."""

    def attempt(self, msg: Record) -> int:
        return 1

    async def ack(self, msg: Record) -> None:
        self.ack_now(msg)

    def ack_now(self, msg: Record) -> None:
        """`ack` without a coroutine (the driver calls it on the hot path): marking an offset is no I/O."""
        tracker = self._trackers.get((msg.topic, msg.partition))
        if tracker is not None:
            tracker.settle(msg.offset)

    async def nak(self, msg: Record, delay: float) -> None:
        raise NotImplementedError("Kafka retries in-process")

    def pause(self, group: Hashable) -> None:
        """Stop fetching the partition (aiokafka `pause`) and stop taking its buffered records (`fetch`)."""
        consumer = self._consumer
        tp = _partition(group)
        if consumer is not None and tp is not None and tp in consumer.assignment():
            consumer.pause(tp)
            self._paused.add(tp)

    def resume(self, group: Hashable) -> None:
        consumer = self._consumer
        tp = _partition(group)
        if tp is not None and tp in self._paused:
            self._paused.discard(tp)
            if consumer is not None and tp in consumer.assignment():
                consumer.resume(tp)
            if self._resumed is not None:
                self._resumed.set()  # a fetch waiting on the other partitions returns now

    def paused(self) -> frozenset[TopicPartition]:
        """The partitions paused for flow control right now."""
        return frozenset(self._paused)

    # --- committing ---------------------------------------------------------------------------

    async def housekeeping(self) -> None:
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
                log.warning("commit failed; will retry", extra={"trigger": self.trigger_key, "error": repr(exc)})

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
                            extra={"trigger": self.trigger_key, "topic": topic, "bootstrap": self.bootstrap})

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
                tracker = self.offsets.get(tp)
                if tracker is not None:
                    tracker.mark_committed(pos)
                gauge.labels(self.trigger_key, tp.topic, str(tp.partition)).set(pos)

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
            end_gauge.labels(self.trigger_key, tp.topic, str(tp.partition)).set(end)
            t = self.offsets.get(tp)
            if t is None or t.committed is None:
                continue  # nothing committed by us yet: position unknown until the first commit
            total += max(0, end - t.committed)
        self._metrics.lag.set(total)
        self.lag = total

    # --- rebalancing --------------------------------------------------------------------------

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
                        extra={"trigger": self.trigger_key, "error": repr(exc)})

    async def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """Before the partitions go: no event of theirs runs any more (queued ones dropped, running ones
        finished or cancelled by the driver, whatever their retry budget), then their settled offsets are
        committed. Unsettled = uncommitted: the next owner reads them again."""
        if not revoked:
            return
        self._generation += 1
        if self._revoke is not None:
            await self._revoke(revoked)
        try:
            await self._commit(only=revoked)
        except KafkaError as exc:
            log.error("commit on revocation failed", extra={"trigger": self.trigger_key, "error": repr(exc)})
        for tp in revoked:
            self.offsets.pop(tp, None)
            self._paused.discard(tp)  # a partition assigned again starts unpaused (aiokafka's state is new)
        log.info("partitions revoked", extra={"trigger": self.trigger_key,
                                              "partitions": [f"{tp.topic}/{tp.partition}" for tp in revoked]})


class KafkaTrigger(SourceDriver[Record]):
    """Runs one Kafka trigger until stopped; safe against crashes (at least once) and rebalances."""

    def __init__(self, trigger: Trigger, pipeline: Pipeline, *, default_bootstrap: str | None = None,
                 client_id: str = "eventbus") -> None:
        self.adapter = KafkaAdapter(trigger, pipeline.metrics, default_bootstrap=default_bootstrap,
                                    client_id=client_id)
        super().__init__(trigger, pipeline, self.adapter)

    @property
    def offsets(self) -> dict[TopicPartition, PartitionOffsets]:
        return self.adapter.offsets

    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions this replica's consumer holds right now (the group's share of the topics)."""
        return self.adapter.assignment()


def _partition(group: Hashable) -> TopicPartition | None:
    """The partition a scheduler group names (a `(topic, partition)` tuple); None for anything else."""
    if isinstance(group, tuple) and len(group) == 2:
        topic, partition = group
        if isinstance(topic, str) and isinstance(partition, int):
            return TopicPartition(topic, partition)
    return None
