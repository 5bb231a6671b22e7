"""Lag watchers: one per trigger, each reading its source's backlog from the broker and turning it into a
`Hint`. Kafka and JetStream read the broker (identical on every replica, right with no consumer running);
HTTP and core NATS can only count what is in flight here; cron has no lag, only its pre-warm window.

`WatchEnv` gives the watchers their clients: the runtime shares its connections, `eventbus lag` opens
its own.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol

from connectors.jetstream_lag import ConsumerQuery, JetStreamLagReader
from connectors.kafka_lag import GroupLag, GroupQuery, KafkaLagReader
from schemas.cron import Schedule, next_fires, parse_schedule
from schemas.trigger import KafkaSource, NatsSource, Trigger
from triggers.scaling import TICK_SETTLE_GRACE, Hint, Reading, cron_hint, hint_for


class WatchEnv(Protocol):
    """The clients watchers read with, and what only this process knows (events in flight here)."""

    async def kafka_reader(self, source: KafkaSource) -> KafkaLagReader: ...

    async def jetstream_reader(self, source: NatsSource) -> JetStreamLagReader: ...

    def in_flight(self, trigger: Trigger) -> int: ...


class Watcher(Protocol):
    trigger: Trigger

    async def read(self, *, ages: bool = True) -> Hint: ...

    def next_change(self, now: float) -> float | None:
        """A wall-clock instant at which the hint changes by itself (cron's pre-warm window), or None."""
        ...


def _age(oldest_s: float | None, now: float) -> float | None:
    return None if oldest_s is None else max(0.0, now - oldest_s)


class KafkaWatcher:
    """Every partition of the source topics: log-end minus the group's committed offset."""

    def __init__(self, trigger: Trigger, env: WatchEnv, query: GroupQuery, source: KafkaSource) -> None:
        self.trigger = trigger
        self.env = env
        self.query = query
        self.source = source

    async def reader(self) -> KafkaLagReader:
        return await self.env.kafka_reader(self.source)

    async def read(self, *, ages: bool = True) -> Hint:
        reader = await self.reader()
        return self.hint_from((await reader.read([self.query], ages=ages))[self.query])

    def hint_from(self, g: GroupLag) -> Hint:
        oldest = None if g.oldest_ms is None else g.oldest_ms / 1000
        return hint_for(self.trigger, Reading(g.lag, _age(oldest, time.time()), g.partitions))

    def next_change(self, now: float) -> float | None:
        return None


class JetStreamWatcher:
    """The durable consumer's pending + ack-pending (the stream's count for the subject before it exists)."""

    def __init__(self, trigger: Trigger, env: WatchEnv, query: ConsumerQuery, source: NatsSource) -> None:
        self.trigger = trigger
        self.env = env
        self.query = query
        self.source = source

    async def read(self, *, ages: bool = True) -> Hint:
        reader = await self.env.jetstream_reader(self.source)
        res = await reader.read(self.query, ages=ages)
        oldest = None if res.oldest is None else res.oldest.timestamp()
        return hint_for(self.trigger, Reading(res.lag, _age(oldest, time.time()), None))

    def next_change(self, now: float) -> float | None:
        return None


class InFlightWatcher:
    """Core NATS and HTTP: events in flight here (plus, for an async HTTP trigger, its topic's lag)."""

    def __init__(self, trigger: Trigger, env: WatchEnv, inner: KafkaWatcher | None = None) -> None:
        self.trigger = trigger
        self.env = env
        self.inner = inner

    def read_now(self) -> Hint:
        """The hint from what is in flight here (no I/O; only without an inner topic)."""
        return hint_for(self.trigger, Reading(self.env.in_flight(self.trigger), None, None))

    async def read(self, *, ages: bool = True) -> Hint:
        lag, age = self.env.in_flight(self.trigger), None
        if self.inner is not None:
            inner = await self.inner.read(ages=ages)
            lag, age = lag + inner.lag, inner.backlog_age_seconds
        return hint_for(self.trigger, Reading(lag, age, None))

    def next_change(self, now: float) -> float | None:
        return None


class CronWatcher:
    """No lag: active from `prewarm` before each tick until the tick settles."""

    def __init__(self, trigger: Trigger, env: WatchEnv) -> None:
        src = trigger.spec.source.cron
        assert src is not None
        self.trigger = trigger
        self.env = env
        self.schedule: Schedule = parse_schedule(src.schedule, src.timezone)
        self._prev: float | None = None
        self._upcoming: float | None = None

    def _next_tick(self, now: float) -> float | None:
        ticks = next_fires(self.schedule, datetime.fromtimestamp(now, UTC), 1)
        return ticks[0].timestamp() if ticks else None

    async def read(self, *, ages: bool = True) -> Hint:
        now = time.time()
        if self._upcoming is not None and self._upcoming <= now:
            self._prev = self._upcoming  # the tick we were waiting for has come
        nxt = self._upcoming = self._next_tick(now)
        return cron_hint(self.trigger, now=now, next_tick=nxt, prev_tick=self._prev,
                         in_flight=self.env.in_flight(self.trigger))

    def next_change(self, now: float) -> float | None:
        """The next instant the window opens, the tick comes, or a fired tick's grace ends."""
        prewarm = self.trigger.spec.scaling.prewarm
        nxt = self._next_tick(now)
        if prewarm is None or nxt is None:
            return None
        candidates = [nxt - prewarm, nxt + 0.01]
        if self._prev is not None:
            candidates.append(self._prev + TICK_SETTLE_GRACE + 0.01)
        future = [c for c in candidates if c > now]
        return min(future) if future else None


def watcher_for(trigger: Trigger, env: WatchEnv) -> Watcher:
    """The watcher of a trigger's source."""
    src = trigger.spec.source
    if src.kafka is not None:
        q = GroupQuery(src.kafka.group_for(trigger.key), tuple(src.kafka.topics), src.kafka.initial_offset)
        return KafkaWatcher(trigger, env, q, src.kafka)
    if src.nats is not None:
        js = src.nats.jetstream
        if js is None:
            return InFlightWatcher(trigger, env)
        durable = js.durable or f"eventbus-{trigger.metadata.namespace}-{trigger.metadata.name}"
        return JetStreamWatcher(trigger, env, ConsumerQuery(js.stream, durable, src.nats.subject,
                                                            js.deliver_policy), src.nats)
    if src.http is not None:
        topic = src.http.topic
        if src.http.mode == "async" and topic is not None and topic.kafka is not None:
            inner_src = KafkaSource(topics=[topic.kafka.topic], bootstrap_servers=topic.kafka.bootstrap_servers)
            q = GroupQuery(inner_src.group_for(trigger.key), (topic.kafka.topic,), "earliest")
            return InFlightWatcher(trigger, env, KafkaWatcher(trigger, env, q, inner_src))
        return InFlightWatcher(trigger, env)
    return CronWatcher(trigger, env)

