"""The hint board: keeps every trigger's scaling hint current and tells whoever listens when it changes.

Reads happen (1) periodically, every `period`, batched (one Kafka read per cluster for all its triggers),
and (2) event-driven: `wake(key)` is called when a local consumer takes an event or the ingress accepts a
request. A wake on an inactive trigger reads at once without the backlog age (one round trip), so the
autoscaler hears `active` within milliseconds of the first event; while active, wakes re-read at most
every `WAKE_GAP` (right-sized hints under a burst without a read per event). In-flight-only watchers
(core NATS, HTTP) cost nothing to read and are re-read on every wake.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Gauge

from connectors.jetstream_lag import JetStreamLagError
from connectors.kafka import KafkaConfigError
from connectors.kafka_lag import GroupQuery, KafkaLagError, KafkaLagReader
from connectors.nats_client import NatsConfigError
from schemas.trigger import Trigger
from triggers.lag_watchers import InFlightWatcher, KafkaWatcher, Watcher
from triggers.metrics import Metrics
from triggers.scaling import Hint

log = logging.getLogger("eventbus.scaling")

PERIOD = 2.0
"""Seconds between periodic reads of a trigger with lag (or active)."""
IDLE_PERIOD = 5.0
"""Seconds between periodic reads of an idle trigger: its first event wakes it anyway (see `wake`), so
this only bounds how late a replica without a local consumer notices. Keeps 200 idle Kafka triggers
at ~40 broker requests/s."""
TICK = 0.5
"""The periodic loop's granularity."""
WAKE_GAP = 0.25
"""While a trigger is active, event-driven re-reads are at most this often."""

READ_ERRORS: tuple[type[BaseException], ...] = (KafkaLagError, JetStreamLagError, OSError, TimeoutError,
                                                ConnectionError, KafkaConfigError, NatsConfigError)

Listener = Callable[[Hint, Hint | None], None]
"""Called with (new, previous) whenever a trigger's hint changes what it says to an autoscaler."""


@dataclass
class _State:
    watcher: Watcher
    hint: Hint | None = None
    seq: int = 0
    applied: int = 0
    last_read: float = -1e18
    wake_pending: bool = False
    reading: bool = False
    again: bool = False
    failing: bool = False
    first: asyncio.Event = field(default_factory=asyncio.Event)
    queues: list[asyncio.Queue[Hint]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    gauges: tuple[Gauge, Gauge, Gauge, Gauge] | None = None  # the trigger's children, resolved once
    wake: Callable[[], None] = field(default=lambda: None)  # `HintBoard.wake` for this key, once registered


def _idle(hint: Hint | None) -> bool:
    return hint is not None and hint.lag == 0 and not hint.active


class HintBoard:
    """Every trigger's current hint; `start()` runs the periodic reads, `wake()` the event-driven ones."""

    def __init__(self, metrics: Metrics | None = None, *, period: float = PERIOD,
                 idle_period: float = IDLE_PERIOD) -> None:
        self.metrics = metrics
        self.period = period
        self.idle_period = idle_period
        self._states: dict[str, _State] = {}
        self._listeners: list[Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.errors: dict[str, str] = {}
        """Trigger key -> why its last read failed (cleared by the next good read)."""

    # --- membership ---------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._loop is not None

    def add(self, watcher: Watcher) -> None:
        key = watcher.trigger.key
        self.remove(key)
        self._states[key] = _State(watcher)
        if self._loop is not None:
            self._register(key)
            self._spawn(key, ages=True)

    def remove(self, key: str) -> None:
        st = self._states.pop(key, None)
        if st is not None and st.timer is not None:
            st.timer.cancel()
        if self.metrics is not None and self._loop is not None:
            self.metrics.wakers.pop(key, None)
            for g in (self.metrics.lag, self.metrics.backlog_age, self.metrics.desired_replicas,
                      self.metrics.active):
                try:
                    g.remove(key)
                except KeyError:
                    pass

    def trigger(self, key: str) -> Trigger | None:
        st = self._states.get(key)
        return None if st is None else st.watcher.trigger

    def keys(self) -> list[str]:
        return list(self._states)

    def get(self, key: str) -> Hint | None:
        st = self._states.get(key)
        return None if st is None else st.hint

    async def current(self, key: str, timeout: float = 5.0) -> Hint | None:
        """The hint, waiting (up to `timeout`) for the first read of a trigger just added."""
        st = self._states.get(key)
        if st is None:
            return None
        if st.hint is None:
            try:
                await asyncio.wait_for(st.first.wait(), timeout)
            except TimeoutError:
                pass
        return st.hint

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def subscribe(self, key: str) -> asyncio.Queue[Hint] | None:
        """A queue receiving the trigger's hint at every change (None for an unknown trigger)."""
        st = self._states.get(key)
        if st is None:
            return None
        q: asyncio.Queue[Hint] = asyncio.Queue()
        st.queues.append(q)
        return q

    def unsubscribe(self, key: str, q: asyncio.Queue[Hint]) -> None:
        st = self._states.get(key)
        if st is not None and q in st.queues:
            st.queues.remove(q)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        for key in self._states:
            self._register(key)
            self._spawn(key, ages=True)
        self._task = asyncio.create_task(self._periodic(), name="scaling-hints")

    def _register(self, key: str) -> None:
        """Only a started board takes the wake-ups (a runtime's private timer runtime shares the metrics)."""
        if self.metrics is not None:
            st = self._states[key]
            st.wake = functools.partial(self.wake, key)  # no Python frame of its own
            self.metrics.wakers[key] = st  # the received count reads `wake_pending` before it calls `wake`

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in self._states.values():
            if st.timer is not None:
                st.timer.cancel()
        self._loop = None

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(min(TICK, self.period))
            now = time.monotonic()
            due = [k for k, st in self._states.items()
                   if now - st.last_read >= (self.idle_period if _idle(st.hint) else self.period)]
            if due:
                await self.refresh(due)

    # --- reading ------------------------------------------------------------------------------

    async def refresh(self, keys: list[str] | None = None) -> None:
        """Read these watchers (default: all) now: Kafka batched per cluster, the others concurrently."""
        kafka: list[tuple[str, KafkaWatcher, int]] = []
        others: list[asyncio.Task[None]] = []
        now = time.monotonic()
        for key in list(self._states) if keys is None else keys:
            st = self._states.get(key)
            if st is None:
                continue
            st.seq += 1
            st.last_read = now
            if isinstance(st.watcher, KafkaWatcher):
                kafka.append((key, st.watcher, st.seq))
            else:
                others.append(asyncio.create_task(self._read_into(key, st.seq, ages=True)))
        await asyncio.gather(self._read_kafka_batch(kafka), *others)

    async def _read_kafka_batch(self, items: list[tuple[str, KafkaWatcher, int]]) -> None:
        """One read for every Kafka trigger of a cluster (grouped by reader after resolving it)."""
        groups: dict[int, tuple[KafkaLagReader, list[tuple[str, KafkaWatcher, int]]]] = {}
        for key, w, seq in items:
            try:
                reader = await w.reader()
            except READ_ERRORS as exc:
                self._failed(key, exc)
                continue
            groups.setdefault(id(reader), (reader, []))[1].append((key, w, seq))
        for reader, members in groups.values():
            queries: list[GroupQuery] = list(dict.fromkeys(w.query for _, w, _ in members))
            try:
                res = await reader.read(queries)
            except READ_ERRORS as exc:
                for key, _, _ in members:
                    self._failed(key, exc)
                continue
            for key, w, seq in members:
                self._apply(key, seq, w.hint_from(res[w.query]))

    async def _read_into(self, key: str, seq: int, *, ages: bool) -> None:
        st = self._states.get(key)
        if st is None:
            return
        try:
            hint = await st.watcher.read(ages=ages)
        except READ_ERRORS as exc:
            self._failed(key, exc)
            return
        self._apply(key, seq, hint)

    def _failed(self, key: str, exc: BaseException) -> None:
        self.errors[key] = f"{type(exc).__name__}: {exc}"
        st = self._states.get(key)
        if st is not None and not st.failing:
            st.failing = True
            log.warning("lag read failed; keeping the last hint", extra={"trigger": key, "error": str(exc)})

    def _apply(self, key: str, seq: int, hint: Hint) -> None:
        st = self._states.get(key)
        if st is None or seq < st.applied:
            return  # a newer read already landed
        st.applied = seq
        st.failing = False
        self.errors.pop(key, None)
        previous, st.hint = st.hint, hint
        st.first.set()
        m = self.metrics
        if m is not None:
            if st.gauges is None:
                st.gauges = (m.lag.labels(key), m.backlog_age.labels(key), m.desired_replicas.labels(key),
                             m.active.labels(key))
            lag, age, desired, active = st.gauges
            lag.set(hint.lag)
            age.set(hint.backlog_age_seconds or 0.0)
            desired.set(hint.desired_replicas)
            active.set(1 if hint.active else 0)
        self._schedule_change(key, st)
        if hint.same_signal(previous):
            return
        for q in st.queues:
            q.put_nowait(hint)
        for listener in self._listeners:
            listener(hint, previous)

    def _schedule_change(self, key: str, st: _State) -> None:
        """Cron: re-read exactly when the pre-warm window opens or the tick comes."""
        if self._loop is None:
            return
        at = st.watcher.next_change(time.time())
        if at is None:
            return
        if st.timer is not None:
            st.timer.cancel()
        st.timer = self._loop.call_later(max(0.0, at - time.time()), self._spawn, key, True)

    # --- waking -------------------------------------------------------------------------------

    def wake(self, key: str) -> None:
        """An event was taken for `key`: re-read soon (at once if the trigger was idle). Thread-safe."""
        loop = self._loop
        if loop is None:
            return
        st = self._states.get(key)
        if st is not None and st.wake_pending:
            return  # a read is already due (the common case under load: checked first, from any thread)
        if threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.wake, key)
            return
        if st is None:
            return
        st.wake_pending = True
        if isinstance(st.watcher, InFlightWatcher) and st.watcher.inner is None:
            loop.call_soon(self._read_local, key)  # no I/O: exact, once per loop turn however many events
            return
        idle = st.hint is None or not st.hint.active
        delay = 0.0 if idle else max(0.0, st.last_read + WAKE_GAP - time.monotonic())
        loop.call_later(delay, self._spawn, key, not idle)

    def _read_local(self, key: str) -> None:
        st = self._states.get(key)
        if st is None or not isinstance(st.watcher, InFlightWatcher):
            return
        st.wake_pending = False
        st.seq += 1
        self._apply(key, st.seq, st.watcher.read_now())

    def _spawn(self, key: str, ages: bool) -> None:
        st = self._states.get(key)
        if st is None:
            return
        st.wake_pending = False
        if st.reading:
            st.again = True
            return
        t = asyncio.create_task(self._wake_read(key, ages))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _wake_read(self, key: str, ages: bool) -> None:
        st = self._states.get(key)
        if st is None:
            return
        st.reading = True
        try:
            st.seq += 1
            st.last_read = time.monotonic()
            await self._read_into(key, st.seq, ages=ages)
            if not ages:  # the quick read told the news; now the full one (backlog age)
                st.seq += 1
                await self._read_into(key, st.seq, ages=True)
        finally:
            st.reading = False
        if st.again:
            st.again = False
            self.wake(key)
