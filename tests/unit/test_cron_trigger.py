"""The cron controller on a manual clock: ids, policies, catch-up, suspend, takeover, and `cron next`."""

from __future__ import annotations

import asyncio
import heapq
import io
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from eventbus.cron import print_next
from schemas.cloudevent import CloudEvent
from schemas.cron import parse_rfc3339
from schemas.trigger import Trigger
from triggers.cron_metrics import CronMetrics
from triggers.cron_trigger import CronTrigger, build_event
from triggers.delivery import Outcome
from triggers.leader import CasLock, MemoryCasStore, SchedulerLock

T0 = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()


class ManualClock:
    """Virtual time: sleepers wake in order as the test advances the clock."""

    def __init__(self, start: float) -> None:
        self.now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._seq), fut))
        await fut

    async def _idle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await self._idle()
        while self._sleepers and self._sleepers[0][0] <= end:
            when, _, fut = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not fut.done():
                fut.set_result(None)
            await self._idle()
        self.now = end
        await self._idle()


class FakePipeline:
    """Records events; each delivery takes `duration` seconds of the manual clock."""

    def __init__(self, clock: ManualClock, duration: float = 0.0) -> None:
        self.clock = clock
        self.duration = duration
        self.started: list[str] = []
        self.done: list[str] = []
        self.cancelled: list[str] = []
        self.events: list[CloudEvent] = []

    async def settle(self, event: CloudEvent, key: bytes | None = None) -> Outcome:
        self.started.append(event.id)
        self.events.append(event)
        try:
            if self.duration:
                await self.clock.sleep(self.duration)
        except asyncio.CancelledError:
            self.cancelled.append(event.id)
            raise
        self.done.append(event.id)
        return Outcome.DELIVERED


def make_trigger(name: str = "tick", **cron: Any) -> Trigger:
    doc = {"apiVersion": "eventbus.dev/v1alpha1", "kind": "Trigger",
           "metadata": {"name": name, "namespace": "ns"},
           "spec": {"source": {"cron": {"schedule": "* * * * * *", **cron}},
                    "function": {"url": "http://fn.invalid/"}}}
    return Trigger.model_validate(doc)


class Harness:
    def __init__(self, trigger: Trigger, *, duration: float = 0.0, store: MemoryCasStore | None = None,
                 clock: ManualClock | None = None, registry: CollectorRegistry | None = None) -> None:
        self.clock = clock or ManualClock(T0)
        self.store = store or MemoryCasStore()
        self.registry = registry or CollectorRegistry()
        self.metrics = CronMetrics(self.registry)
        self.pipeline = FakePipeline(self.clock, duration)
        src = trigger.spec.source.cron
        assert src is not None
        self.lock = CasLock(self.store, trigger.key, lease_duration=src.lease_duration, clock=self.clock.time)

        async def lock() -> SchedulerLock:
            return self.lock

        self.ctl = CronTrigger(trigger, self.pipeline, lock=lock, metrics=self.metrics, clock=self.clock)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Harness:
        self.task = asyncio.create_task(self.ctl.run(grace=0.0))
        return self

    async def stop(self) -> None:
        self.ctl.stop()
        assert self.task is not None
        await self.clock.advance(0)
        await asyncio.wait_for(self.task, 5)

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


def ids(h: Harness) -> list[str]:
    return [i.rsplit("/", 1)[1] for i in h.pipeline.started]


async def test_fires_each_second_with_deterministic_ids() -> None:
    h = Harness(make_trigger()).start()
    await h.clock.advance(3.5)
    await h.stop()
    assert ids(h) == ["2026-05-01T12:00:01Z", "2026-05-01T12:00:02Z", "2026-05-01T12:00:03Z"]
    ev = h.pipeline.events[0]
    assert ev.attributes["source"] == "cron://ns/tick"
    assert ev.attributes["type"] == "dev.eventbus.cron.tick"
    assert ev.attributes["time"] == ev.attributes["scheduledtime"] == "2026-05-01T12:00:01Z"
    assert h.value("eventbus_cron_fires_total", trigger="ns/tick") == 3
    assert h.value("eventbus_cron_lateness_seconds_count", trigger="ns/tick") == 3


def test_event_data_forms() -> None:
    t = make_trigger(data={"job": "report"})
    e = build_event(t, datetime(2026, 1, 1, tzinfo=UTC))
    assert e.data == b'{"job":"report"}' and e.datacontenttype == "application/json"
    t = make_trigger(dataBase64="aGk=", contentType="text/plain")
    e = build_event(t, datetime(2026, 1, 1, tzinfo=UTC))
    assert e.data == b"hi" and e.datacontenttype == "text/plain"
    t = make_trigger(data="hello", contentType="text/plain")
    assert build_event(t, datetime(2026, 1, 1, tzinfo=UTC)).data == b"hello"
    assert build_event(make_trigger(), datetime(2026, 1, 1, tzinfo=UTC)).data is None


async def test_jitter_delays_each_tick_by_its_own_amount() -> None:
    h = Harness(make_trigger(schedule="@every 10s", jitter="5s")).start()
    await h.clock.advance(10.0)  # the first tick is at +10s, delayed by up to 5s
    assert h.pipeline.started == []
    await h.clock.advance(5.0)
    await h.stop()
    assert ids(h) == ["2026-05-01T12:00:10Z"]


async def test_forbid_skips_while_previous_runs() -> None:
    h = Harness(make_trigger(concurrencyPolicy="Forbid"), duration=2.5).start()
    await h.clock.advance(6.5)
    await h.stop()
    # ticks 1..6: 1 runs until 3.5 (2 and 3 skipped), 4 runs until 6.5 (5 and 6 skipped)
    assert ids(h) == ["2026-05-01T12:00:01Z", "2026-05-01T12:00:04Z"]
    assert h.value("eventbus_cron_skipped_total", trigger="ns/tick", reason="forbid") == 4


async def test_replace_cancels_previous_delivery() -> None:
    h = Harness(make_trigger(concurrencyPolicy="Replace"), duration=2.5).start()
    await h.clock.advance(3.5)
    await h.stop()
    assert len(h.pipeline.started) == 3
    assert h.pipeline.cancelled[:2] == h.pipeline.started[:2]
    assert h.value("eventbus_cron_skipped_total", trigger="ns/tick", reason="replaced") == 2


async def test_allow_overlaps() -> None:
    h = Harness(make_trigger(), duration=2.5).start()
    await h.clock.advance(3.5)
    assert len(h.pipeline.started) == 3 and h.pipeline.done == h.pipeline.started[:1]
    await h.stop()


async def test_catch_up_after_downtime_within_deadline() -> None:
    trigger = make_trigger(schedule="@every 1m", startingDeadline="10m", catchUp={"maxTicks": 3})
    store = MemoryCasStore()
    first = Harness(trigger, store=store).start()
    await first.clock.advance(60.5)
    await first.stop()
    assert ids(first) == ["2026-05-01T12:01:00Z"]
    # down for 20 minutes: 19 ticks passed (12:02 .. 12:20); 9 are older than 10m, 3 newest within it fire
    second = Harness(trigger, store=store, clock=ManualClock(T0 + 20 * 60 + 30)).start()
    await second.clock.advance(0.1)
    await second.stop()
    assert ids(second) == ["2026-05-01T12:18:00Z", "2026-05-01T12:19:00Z", "2026-05-01T12:20:00Z"]
    assert second.value("eventbus_cron_skipped_total", trigger="ns/tick", reason="missed") == 16


async def test_no_catch_up_configured_skips_missed() -> None:
    trigger = make_trigger(schedule="@every 1m")
    store = MemoryCasStore()
    first = Harness(trigger, store=store).start()
    await first.clock.advance(60.5)
    await first.stop()
    second = Harness(trigger, store=store, clock=ManualClock(T0 + 5 * 60 + 30)).start()
    await second.clock.advance(31)
    await second.stop()
    assert ids(second) == ["2026-05-01T12:06:00Z"]
    assert second.value("eventbus_cron_skipped_total", trigger="ns/tick", reason="missed") == 4


async def test_suspend_fires_nothing() -> None:
    h = Harness(make_trigger(suspend=True)).start()
    await h.clock.advance(5)
    assert h.ctl.ready.is_set()
    await h.stop()
    assert h.pipeline.started == []


async def test_two_replicas_fire_each_tick_once_and_follower_takes_over_with_pending() -> None:
    trigger = make_trigger(leaseDuration="3s", startingDeadline="1m", catchUp={"maxTicks": 10})
    store, clock = MemoryCasStore(), ManualClock(T0)
    a = Harness(trigger, store=store, clock=clock, duration=0.2).start()
    await clock.advance(0.01)
    b = Harness(trigger, store=store, clock=clock, duration=0.2).start()
    await clock.advance(5.0)
    assert ids(b) == [] and len(ids(a)) == 5
    assert a.ctl.leading and not b.ctl.leading
    # "kill" a mid-delivery: its task vanishes without releasing or settling anything
    await clock.advance(1.05)  # tick 6 dispatched at +6.0, its delivery runs until +6.2
    assert a.task is not None
    a.task.cancel()
    a.ctl.lock = None  # a dead process writes nothing
    await asyncio.gather(a.task, return_exceptions=True)
    await clock.advance(4.0)
    await b.stop()
    fired_by_b = ids(b)
    assert fired_by_b[0] == "2026-05-01T12:00:06Z"  # claimed by a, never settled: fired again
    assert b.ctl.fired[0] == parse_rfc3339("2026-05-01T12:00:06Z")
    everything = ids(a) + fired_by_b
    assert sorted(set(everything)) == [f"2026-05-01T12:00:{s:02d}Z" for s in range(1, 11)]
    # every tick once, except the one that was in flight when the leader died (at least once)
    assert len(everything) == len(set(everything)) + 1


async def test_graceful_stop_releases_lease_for_immediate_takeover() -> None:
    trigger = make_trigger(leaseDuration="10s")
    store, clock = MemoryCasStore(), ManualClock(T0)
    a = Harness(trigger, store=store, clock=clock).start()
    await clock.advance(0.01)
    b = Harness(trigger, store=store, clock=clock).start()
    await clock.advance(2.0)
    await a.stop()
    await clock.advance(3.0)
    await b.stop()
    assert ids(a) == ["2026-05-01T12:00:01Z", "2026-05-01T12:00:02Z"]
    assert ids(b) == ["2026-05-01T12:00:03Z", "2026-05-01T12:00:04Z", "2026-05-01T12:00:05Z"]


def test_cron_next_prints_zone_and_utc() -> None:
    doc = yaml.safe_load("""
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {name: nightly, namespace: ops}
spec:
  source: {cron: {schedule: "30 2 * * *", timeZone: America/New_York}}
  function: {name: job}
""")
    out = io.StringIO()
    print_next([Trigger.model_validate(doc)], 2, now=datetime(2026, 3, 7, 12, tzinfo=UTC), out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ops/nightly")
    assert lines[1].split() == ["2026-03-08T03:00:00-04:00", "2026-03-08T07:00:00Z"]
    assert lines[2].split() == ["2026-03-09T02:30:00-04:00", "2026-03-09T06:30:00Z"]


@pytest.mark.parametrize("count", [0])
def test_cron_next_command_rejects_bad_count(count: int, tmp_path: Any) -> None:
    from eventbus.cli import main

    f = tmp_path / "t.yaml"
    f.write_text("apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {name: a}\n"
                 "spec: {source: {cron: {schedule: '61 * * * *'}}, function: {name: f}}\n")
    assert main(["cron", "next", "-f", str(f), "--count", "3"]) == 1
    assert main(["cron", "next", "-f", str(f), "--count", str(count)]) == 2
