"""Kafka lag read from the broker, not from one consumer's assignment: every partition of a group's topics,
log-end offset minus the group's committed offset (admin API), so every replica and `eventbus lag` agree,
even while no consumer runs.

One `KafkaLagReader` per cluster serves every trigger on it: one metadata call (cached), one ListOffsets
per broker for all partitions, and one OffsetFetch per group (coordinators cached) per read. A partition
the group never committed counts from `initialOffset` as KEDA's Kafka scaler does: `earliest` = from the
log start, `latest` = no lag. The backlog age comes from the timestamp of the first waiting record of
each lagging partition (fetched once per committed offset and cached; while the committed offset moves,
at most every `HEAD_REFRESH` per partition, the last one standing in between: an age at most that much too
old, never too young).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

log = logging.getLogger("eventbus.scaling")

METADATA_TTL = 10.0
"""How long a topic's partition count is trusted (partitions may be added)."""
HEAD_FETCH_TIMEOUT = 1.0
"""The longest a read waits for the first waiting record of lagging partitions (for the backlog age)."""
HEAD_REFRESH = 2.0
"""A partition's head timestamp is fetched again at most this often while its committed offset moves."""
MAX_HELD_PARTITIONS = 4096
"""Partitions the head-fetching consumer keeps assigned (paused) between reads before it starts afresh."""


class KafkaLagError(RuntimeError):
    """The broker did not answer a lag read (unreachable, coordinator moving); the watcher retries."""


@dataclass(frozen=True, slots=True)
class GroupQuery:
    """One trigger's consumer group and the topics it reads."""

    group: str
    topics: tuple[str, ...]
    initial_offset: str = "earliest"


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


@dataclass(frozen=True, slots=True)
class GroupLag:
    """A group's lag over every partition of its topics; `oldest_ms` is the timestamp (ms since the epoch)
    of the oldest waiting record, None when nothing waits or it could not be read."""

    lag: int
    partitions: int
    oldest_ms: int | None
    detail: tuple[PartitionLag, ...]


class KafkaLagReader:
    """Reads lag of many groups on one cluster with few broker calls; `calls` counts the requests made."""

    def __init__(self, bootstrap: str, security: dict[str, Any] | None = None, *,
                 client_id: str = "eventbus-lag", head_refresh: float = HEAD_REFRESH) -> None:
        self.bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id,
                                          request_timeout_ms=10_000, **(security or {}))
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest",
                                          fetch_max_wait_ms=50, max_partition_fetch_bytes=64 * 1024,
                                          request_timeout_ms=10_000, **(security or {}))
        self._partitions: dict[str, tuple[float, int]] = {}
        self._coordinators: dict[str, int] = {}
        self._heads: dict[tuple[TopicPartition, int], int] = {}
        self.head_refresh = head_refresh
        self._fetched_at: dict[TopicPartition, tuple[float, int, int]] = {}
        """Partition -> (when, offset, timestamp) of the last head fetched there (see `_recent_head`)."""
        self._fetch_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()
        """Two reads that find the reader unstarted (a wake-up beside the periodic read) start it once."""
        self._started = False
        self.calls = 0
        self.head_fetches = 0

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            try:
                await self._admin.start()
                await self._consumer.start()
            except KafkaError as exc:
                await self.close()
                raise KafkaLagError(f"cannot reach Kafka at {self.bootstrap}: {exc!r}") from exc
            self._started = True

    async def close(self) -> None:
        self._started = False
        for closer in (self._consumer.stop, self._admin.close):
            try:
                await closer()
            except (KafkaError, OSError, RuntimeError):
                pass

    # --- reading ------------------------------------------------------------------------------

    async def read(self, queries: Sequence[GroupQuery], *, ages: bool = True) -> dict[GroupQuery, GroupLag]:
        """The lag of each group; raises KafkaLagError when the cluster does not answer. `ages=False` skips
        the backlog age (a fetch): the quick read that reports a trigger turning active."""
        if not self._started:
            await self.start()
        try:
            return await self._read(queries, ages)
        except KafkaError as exc:
            self._coordinators.clear()  # a moved coordinator, a deleted topic: look them up again
            self._partitions.clear()
            raise KafkaLagError(f"reading lag from {self.bootstrap} failed: {exc!r}") from exc

    async def _read(self, queries: Sequence[GroupQuery], ages: bool) -> dict[GroupQuery, GroupLag]:
        topics = sorted({t for q in queries for t in q.topics})
        counts = await self._partition_counts(topics)
        tps_of = {q: [TopicPartition(t, p) for t in q.topics for p in range(counts.get(t, 0))] for q in queries}
        every = sorted({tp for tps in tps_of.values() for tp in tps})
        # log starts for `earliest` groups, asked in parallel (a never-committed partition needs them, and a
        # second round trip would delay the first `active` of a new trigger)
        early = sorted({tp for q in queries if q.initial_offset == "earliest" for tp in tps_of[q]})
        ends: dict[TopicPartition, int] = {}
        starts: dict[TopicPartition, int] = {}
        committed: list[dict[TopicPartition, int]] = [{} for _ in queries]
        if every:
            ends, starts, committed = await asyncio.gather(
                self._consumer.end_offsets(every),
                self._consumer.beginning_offsets(early) if early else _nothing(),
                asyncio.gather(*(self._committed(q.group, tps_of[q]) for q in queries)),
            )
            self.calls += 2 if early else 1
        heads: set[tuple[TopicPartition, int]] = set()
        plans: list[list[PartitionLag]] = []
        for q, c in zip(queries, committed, strict=True):
            rows: list[PartitionLag] = []
            for tp in tps_of[q]:
                end = int(ends.get(tp, 0))
                pos = c.get(tp)
                if pos is None:
                    from_ = starts.get(tp, end) if q.initial_offset == "earliest" else end
                else:
                    from_ = pos
                lag = max(0, end - from_)
                rows.append(PartitionLag(tp.topic, tp.partition, pos, end, lag))
                if lag > 0:
                    heads.add((tp, from_))
            plans.append(rows)
        stamps = await self._head_timestamps(heads) if heads and ages else {}
        out: dict[GroupQuery, GroupLag] = {}
        for q, rows in zip(queries, plans, strict=True):
            ts = [stamps.get((TopicPartition(r.topic, r.partition), _from(r, q))) for r in rows if r.lag > 0]
            known = [t for t in ts if t is not None and t >= 0]
            out[q] = GroupLag(lag=sum(r.lag for r in rows), partitions=len(rows),
                              oldest_ms=min(known) if known else None, detail=tuple(rows))
        return out

    async def _partition_counts(self, topics: list[str]) -> dict[str, int]:
        now = time.monotonic()
        stale = [t for t in topics if t not in self._partitions or now - self._partitions[t][0] > METADATA_TTL]
        if stale:
            described = await self._admin.describe_topics(stale)
            self.calls += 1
            for entry in described:
                n = len(entry.get("partitions") or []) if entry.get("error_code", 0) == 0 else 0
                self._partitions[entry["topic"]] = (now, n)
        return {t: self._partitions.get(t, (now, 0))[1] for t in topics}

    async def _committed(self, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        coordinator = self._coordinators.get(group)
        if coordinator is None:
            coordinator = self._coordinators[group] = await self._admin.find_coordinator(group)
            self.calls += 1
        res = await self._admin.list_consumer_group_offsets(group, group_coordinator_id=coordinator,
                                                            partitions=tps)
        self.calls += 1
        return {tp: int(om.offset) for tp, om in res.items() if om.offset is not None and om.offset >= 0}

    async def _head_timestamps(self, heads: set[tuple[TopicPartition, int]]) -> dict[tuple[TopicPartition, int], int]:
        """Timestamps of the records at `heads` ((partition, offset) pairs): cached, the rest fetched (one
        round per distinct offset of a partition: usually one round)."""
        now = time.monotonic()
        fresh: list[tuple[TopicPartition, int]] = []
        missing: list[tuple[TopicPartition, int]] = []
        for k in sorted(k for k in heads if k not in self._heads):
            (fresh if self._recent_head(k, now) else missing).append(k)
        while missing:
            round_: dict[TopicPartition, int] = {}
            for tp, off in missing:
                round_.setdefault(tp, off)
            async with self._fetch_lock:
                got = await self._fetch_heads(round_)
            for tp, off in round_.items():
                if tp in got:
                    self._heads[(tp, off)] = got[tp]
                    self._fetched_at[tp] = (time.monotonic(), off, got[tp])
            missing = [k for k in missing if round_.get(k[0]) != k[1]]
        lagging = {tp for tp, _ in heads}
        for k in [k for k in self._heads if k not in heads and k[0] in lagging]:
            del self._heads[k]  # the committed offset moved on: that record is no longer the head
        out = {k: self._heads[k] for k in heads if k in self._heads}
        for tp, off in fresh:
            out[(tp, off)] = self._fetched_at[tp][2]
        return out

    def _recent_head(self, head: tuple[TopicPartition, int], now: float) -> bool:
        """Whether a head of this partition at or before `head` was fetched within HEAD_REFRESH: its
        timestamp then stands in for this one's (an age at most HEAD_REFRESH plus the records between too
        old). Fetching a head decodes its whole record batch, up to thousands of records: under load, with
        the committed offset moving at every read, that was most of the lag reader's CPU."""
        tp, off = head
        seen = self._fetched_at.get(tp)
        return seen is not None and now - seen[0] < self.head_refresh and seen[1] <= off

    async def _fetch_heads(self, heads: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """The timestamp of the record at each offset. The partitions stay assigned (paused) between reads:
        every change of a consumer's assignment costs a metadata refresh, and an empty one refreshes the
        metadata of every topic in the cluster (measured: a quarter of the lag reader's CPU under load)."""
        self.head_fetches += 1
        consumer = self._consumer
        wanted = set(heads)
        held = consumer.assignment()
        if not wanted <= held:
            keep = held | wanted if len(held) < MAX_HELD_PARTITIONS else wanted
            consumer.assign(sorted(keep))
            consumer.pause(*(keep - wanted))
        for tp, off in heads.items():
            consumer.seek(tp, off)
        consumer.resume(*wanted)
        got: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + HEAD_FETCH_TIMEOUT
        try:
            while len(got) < len(heads):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                todo = [tp for tp in heads if tp not in got]
                batch = await consumer.getmany(*todo, timeout_ms=int(left * 1000), max_records=len(todo) * 4)
                self.calls += 1
                for tp, records in batch.items():
                    if records and tp not in got:
                        got[tp] = int(records[0].timestamp)
        finally:
            consumer.pause(*wanted)  # no fetching between reads; the next read seeks again
        return got


async def _nothing() -> dict[TopicPartition, int]:
    return {}


def _from(row: PartitionLag, q: GroupQuery) -> int:
    """The offset of a lagging partition's first waiting record (the committed offset, else the start)."""
    return row.committed if row.committed is not None else row.end - row.lag
