"""The cron trigger controller: elect one scheduler per trigger, fire each tick once, on time.

A term of leadership goes: acquire the lease (`triggers.leader`), re-fire ticks the previous leader
claimed but did not settle, catch up on ticks missed while nobody led (within `startingDeadline`, at most
`catchUp.maxTicks`, older ones skipped and counted), then fire ticks as they come due.

Each tick is claimed in the lock record (a compare-and-swap) *before* it is dispatched and settled after,
so a replica that lost the lease can never fire, and a tick whose leader died mid-delivery is fired again
by the next one with the same id (at least once; consumers de-duplicate on `id`).

Timing: the controller sleeps on the event loop's monotonic clock for `tick - now` (wall), recomputed for
every tick so nothing drifts, and never busy-waits. It wakes `PREPARE` seconds early to write the claim,
then sleeps the rest, so the network round trip of the claim is not paid at the scheduled instant and the
dispatch starts on time even when another trigger keeps the loop busy.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from schemas.cloudevent import AttributeValue, CloudEvent
from schemas.cron import Schedule, jitter_for, parse_schedule, rfc3339, tick_id
from schemas.trigger import CronSource, Trigger
from triggers.cancel import cancel_until_done
from triggers.cron_metrics import CronMetrics
from triggers.delivery import Outcome
from triggers.leader import AlreadyClaimed, LeaderError, LostLeadership, SchedulerLock

log = logging.getLogger("eventbus.cron")

DEFAULT_EVENT_TYPE = "dev.eventbus.cron.tick"
PREPARE = 0.05
"""Seconds before a tick at which the claim is written (the tick is dispatched at its instant)."""
BEHIND = 1.0
"""A tick this many seconds overdue when its turn comes was missed (loop stall, clock jump, suspend)."""
LOCK_RETRY = 1.0
SPIN = 0.002


class Clock(Protocol):
    """Wall time and sleeping; `SystemClock` in production, a manual clock in unit tests."""

    def time(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """`time.time()`, and `asyncio.sleep`, which waits on the loop's monotonic clock."""

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep, then yield-spin the last `SPIN` seconds: the selector's millisecond rounding and the
        timer's wake-up would otherwise add ~1-2 ms to every tick."""
        target = time.monotonic() + seconds
        if seconds > SPIN:
            await asyncio.sleep(seconds - SPIN)
        while time.monotonic() < target:
            await asyncio.sleep(0)


class Settler(Protocol):
    """What the controller needs of `triggers.delivery.Pipeline`."""

    async def settle(self, event: CloudEvent, key: bytes | None = None) -> Outcome: ...

    async def fail_internal(self, event: CloudEvent, exc: BaseException, *, attempts: int = 0,
                            key: bytes | None = None) -> Outcome: ...


LockFactory = Callable[[], Awaitable[SchedulerLock]]


def build_event(trigger: Trigger, scheduled: datetime) -> CloudEvent:
    """The CloudEvent of one tick: deterministic id, `time` and `scheduledtime` = the scheduled instant."""
    src = trigger.spec.source.cron
    assert src is not None
    ns, name = trigger.metadata.namespace, trigger.metadata.name
    stamp = rfc3339(scheduled)
    attrs: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": tick_id(ns, name, scheduled),
        "source": trigger.spec.event.source or f"cron://{ns}/{name}",
        "type": trigger.spec.event.type or DEFAULT_EVENT_TYPE,
        "time": stamp,
        "scheduledtime": stamp,
    }
    data: bytes | None = None
    if src.data_base64 is not None:
        data = base64.b64decode(src.data_base64)
        attrs["datacontenttype"] = src.content_type or "application/octet-stream"
    elif src.data is not None:
        if isinstance(src.data, str) and src.content_type and not _is_json(src.content_type):
            data = src.data.encode()
        else:
            data = json.dumps(src.data, separators=(",", ":")).encode()
        attrs["datacontenttype"] = src.content_type or "application/json"
    return CloudEvent(attrs, data)


def _is_json(content_type: str) -> bool:
    essence = content_type.split(";")[0].strip().lower()
    return essence.endswith("/json") or essence.endswith("+json")


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class CronTrigger:
    """Runs one cron trigger until stopped: leader election, catch-up, concurrency policy, jitter."""

    def __init__(self, trigger: Trigger, pipeline: Settler, *, lock: LockFactory, metrics: CronMetrics,
                 clock: Clock | None = None) -> None:
        src = trigger.spec.source.cron
        assert src is not None
        self.trigger = trigger
        self.source: CronSource = src
        self.schedule: Schedule = parse_schedule(src.schedule, src.timezone)
        self.pipeline = pipeline
        self._lock_factory = lock
        self.lock: SchedulerLock | None = None
        self.clock: Clock = clock or SystemClock()
        key = trigger.key
        self._fires = metrics.fires.labels(key)
        self._lateness = metrics.lateness.labels(key)
        self._skipped = {r: metrics.skipped.labels(key, r) for r in ("forbid", "replaced", "missed", "deadline")}
        self.ready = asyncio.Event()
        self.leading = False
        self._stopping = asyncio.Event()
        self._interrupt: asyncio.Future[None] | None = None
        self._inflight: dict[datetime, asyncio.Task[None]] = {}
        self.fired: list[datetime] = []  # ticks dispatched by this controller (tests and the benchmark)

    # --- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        if self._interrupt is not None and not self._interrupt.done():
            self._interrupt.set_result(None)

    async def run(self, grace: float = 30.0) -> None:
        """Lead or follow until `stop()`; then let deliveries finish within `grace` and release the lease."""
        self._interrupt = asyncio.get_running_loop().create_future()
        try:
            if self.source.suspend:
                log.info("cron trigger suspended: not firing", extra={"trigger": self.trigger.key})
                self.ready.set()
                await self._stopping.wait()
                return
            self.lock = await self._lock_factory()
            while not self._stopping.is_set():
                try:
                    ledger = await self.lock.acquire()
                except LeaderError:
                    raise
                except Exception as exc:  # the lock store is unreachable: nobody fires rather than two
                    log.warning("cron lock unavailable; retrying", extra={"trigger": self.trigger.key,
                                                                          "error": repr(exc)})
                    self.ready.set()
                    await self._pause(LOCK_RETRY)
                    continue
                self.ready.set()
                if ledger is None:
                    await self._follow()
                    continue
                await self._lead(ledger.last_tick, ledger.pending)
        finally:
            await self._drain(grace)
            if self.lock is not None:
                try:
                    await self.lock.release()
                except Exception as exc:
                    log.warning("cron lease release failed", extra={"trigger": self.trigger.key,
                                                                    "error": repr(exc)})

    async def _drain(self, grace: float) -> None:
        tasks = list(self._inflight.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        await cancel_until_done(*pending)

    async def _pause(self, seconds: float) -> None:
        """Sleep on the clock, cut short by `stop()` or loss of the lease."""
        fut = self._interrupt
        if fut is None or fut.done():
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        try:
            await asyncio.wait({sleeper, fut}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sleeper.done():
                sleeper.cancel()

    async def _sleep_until(self, ts: float) -> None:
        await self._pause(ts - self.clock.time())

    async def _follow(self) -> None:
        """Wait for the leader's lease to run out (or be released), then try again."""
        assert self.lock is not None
        if self.leading:
            self.leading = False
        try:
            wait = await self.lock.expires_in()
        except Exception:
            wait = LOCK_RETRY
        # a released lease shows as 0: retry at once; otherwise at expiry, checking now and then
        await self._pause(min(max(wait + 0.01, 0.05), max(self.lock.lease_duration / 4, 0.1)))

    # --- leading ------------------------------------------------------------------------------

    async def _lead(self, last: datetime | None, pending: tuple[datetime, ...]) -> None:
        assert self.lock is not None
        lock = self.lock
        self.leading = True
        log.info("cron leader", extra={"trigger": self.trigger.key, "holder": lock.holder,
                                       "last_tick": rfc3339(last) if last else None})
        renew = asyncio.create_task(self._renew_loop())
        try:
            for tick in pending:  # claimed by a previous leader, never settled: fire again, same id
                await self._sleep_until(tick.timestamp())  # it may have been claimed ahead of its instant
                if self._stopping.is_set() or renew.done():
                    return
                await self._fire(tick)
            now = self.clock.time()
            cursor = last if last is not None else _at(now)
            cursor = await self._catch_up(cursor, now)
            while not self._stopping.is_set() and not renew.done():
                tick = self.schedule.next_after(cursor)
                due = tick.timestamp() + jitter_for(tick_id(self.trigger.metadata.namespace,
                                                            self.trigger.metadata.name, tick), self.source.jitter)
                now = self.clock.time()
                if now - due > BEHIND:  # stalled or clock jumped: treat the gap like downtime
                    cursor = await self._catch_up(cursor, now)
                    continue
                await self._sleep_until(due - PREPARE)
                if self._stopping.is_set() or renew.done():
                    return
                try:
                    await lock.claim(tick)
                except AlreadyClaimed:
                    cursor = tick
                    continue
                cursor = tick
                await self._sleep_until(due)
                await self._fire(tick, due=due)
        except LostLeadership as exc:
            log.warning("cron leadership lost", extra={"trigger": self.trigger.key, "error": str(exc)})
        finally:
            await cancel_until_done(renew)  # a plain cancel can be lost in a NATS request (triggers.cancel)
            self.leading = False
            if self._interrupt is not None and self._interrupt.done() and not self._stopping.is_set():
                self._interrupt = asyncio.get_running_loop().create_future()

    async def _renew_loop(self) -> None:
        """Renew the lease every third of its duration; on failure, interrupt the term."""
        assert self.lock is not None
        lock = self.lock
        try:
            while True:
                await self.clock.sleep(lock.lease_duration / 3)
                try:
                    ledger = await lock.acquire()
                except Exception as exc:
                    log.warning("cron lease renewal failed", extra={"trigger": self.trigger.key,
                                                                    "error": repr(exc)})
                    continue  # keep trying within the lease; the next claim fails if it is lost
                if ledger is None:
                    return
        finally:
            self._wake()

    async def _catch_up(self, cursor: datetime, now: float) -> datetime:
        """Fire missed ticks in (cursor, now] within the deadline, at most maxTicks; skip older ones.

        Returns the new cursor (the last tick considered)."""
        assert self.lock is not None
        deadline = self.source.starting_deadline
        max_ticks = self.source.catch_up.max_ticks if self.source.catch_up is not None else 0
        horizon = _at(now)
        missed: list[datetime] = []
        skipped = 0
        t = self.schedule.next_after(cursor)
        while t <= horizon:
            if deadline is not None and now - t.timestamp() > deadline:
                skipped += 1
            else:
                missed.append(t)
                if len(missed) > max_ticks:
                    missed.pop(0)
                    skipped += 1
            cursor = t
            t = self.schedule.next_after(t)
        if skipped:
            self._skipped["missed"].inc(skipped)
            log.warning("cron ticks missed and skipped", extra={"trigger": self.trigger.key, "count": skipped})
        for tick in missed:
            if self._stopping.is_set():
                break
            try:
                await self.lock.claim(tick)
            except AlreadyClaimed:
                continue
            await self._fire(tick)
        return cursor

    # --- firing -------------------------------------------------------------------------------

    async def _fire(self, tick: datetime, *, due: float | None = None) -> None:
        """Apply the deadline and concurrency policy to a claimed tick, then dispatch it in a task.

        The task marks the tick settled in the lock once the pipeline has settled the event."""
        assert self.lock is not None
        now = self.clock.time()
        deadline = self.source.starting_deadline
        if deadline is not None and now - tick.timestamp() > deadline:
            self._skipped["deadline"].inc()
            await self.lock.settle(tick)
            return
        policy = self.source.concurrency_policy
        running = [t for t in self._inflight.values() if not t.done()]
        if running and policy == "Forbid":
            self._skipped["forbid"].inc()
            log.info("cron tick skipped: previous delivery still running (Forbid)",
                     extra={"trigger": self.trigger.key, "tick": rfc3339(tick)})
            await self.lock.settle(tick)
            return
        if running and policy == "Replace":
            for task in running:
                task.cancel()
            self._skipped["replaced"].inc(len(running))
        event = build_event(self.trigger, tick)
        self._lateness.observe(max(0.0, now - (due if due is not None else tick.timestamp())))
        self._fires.inc()
        self.fired.append(tick)
        task = asyncio.create_task(self._deliver(tick, event), name=f"cron:{event.id}")
        self._inflight[tick] = task
        if running and policy == "Replace":
            await asyncio.gather(*running, return_exceptions=True)

    async def _deliver(self, tick: datetime, event: CloudEvent) -> None:
        settled = False
        try:
            try:
                await self.pipeline.settle(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the same policy as every source: an internal dead letter
                await self.pipeline.fail_internal(event, exc)
            settled = True
        except asyncio.CancelledError:
            settled = self.source.concurrency_policy == "Replace" and not self._stopping.is_set()
            if not settled:
                raise  # shutdown mid-delivery: leave it pending so the next leader fires it again
        finally:
            self._inflight.pop(tick, None)
            if settled and self.lock is not None:
                try:
                    await self.lock.settle(tick)
                except LeaderError:
                    pass  # the next leader re-fires it: at least once
                except Exception as exc:
                    log.warning("cron settle not recorded", extra={"trigger": self.trigger.key,
                                                                   "tick": rfc3339(tick), "error": repr(exc)})
