"""The hint board's reading rules with a scripted watcher (no broker): event-driven wake-ups, change
notification, gauges, and the `eventbus lag` table."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from eventbus.lag_cli import human_duration, render_table
from schemas.trigger import Trigger
from triggers.hint_board import HintBoard
from triggers.metrics import Metrics
from triggers.scaling import Hint, Reading, hint_for


def _trigger(name: str = "t") -> Trigger:
    return Trigger.model_validate({
        "apiVersion": "eventbus.dev/v1alpha1", "kind": "Trigger", "metadata": {"name": name, "namespace": "ns"},
        "spec": {"source": {"nats": {"subject": "x", "jetstream": {"stream": "S"}}}, "function": {"name": "f"}},
    })


class Scripted:
    """A watcher whose lag the test sets; counts its reads."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.lag = 0
        self.reads = 0

    async def read(self, *, ages: bool = True) -> Hint:
        self.reads += 1
        return hint_for(self.trigger, Reading(self.lag, 1.0 if self.lag else None, None))

    def next_change(self, now: float) -> float | None:
        return None


async def test_a_wake_on_an_idle_trigger_reads_at_once_and_notifies() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    board = HintBoard(metrics, period=60, idle_period=60)
    w = Scripted(_trigger())
    board.add(w)
    await board.start()
    try:
        first = await board.current("ns/t")
        assert first is not None and not first.active
        q = board.subscribe("ns/t")
        assert q is not None
        w.lag = 25
        started = time.perf_counter()
        metrics.for_trigger("ns/t").received.inc()  # what the pipeline does when it takes an event
        hint = await asyncio.wait_for(q.get(), 1)
        assert time.perf_counter() - started < 0.05
        assert (hint.active, hint.lag, hint.desired_replicas) == (True, 25, 3)
        assert registry.get_sample_value("eventbus_trigger_desired_replicas", {"trigger": "ns/t"}) == 3
        assert registry.get_sample_value("eventbus_trigger_active", {"trigger": "ns/t"}) == 1
        assert registry.get_sample_value("eventbus_trigger_backlog_age_seconds", {"trigger": "ns/t"}) == 1.0
        reads = w.reads
        for _ in range(100):  # a burst while active: a few re-reads, not one per event
            metrics.for_trigger("ns/t").received.inc()
        await asyncio.sleep(0.4)
        assert 1 <= w.reads - reads <= 4
    finally:
        await board.stop()


async def test_unchanged_hints_are_not_notified_and_removal_drops_gauges() -> None:
    registry = CollectorRegistry()
    board = HintBoard(Metrics(registry), period=60, idle_period=60)
    w = Scripted(_trigger())
    board.add(w)
    await board.start()
    try:
        await board.current("ns/t")
        q = board.subscribe("ns/t")
        assert q is not None
        await board.refresh()
        await board.refresh()
        assert q.empty()
        board.remove("ns/t")
        assert registry.get_sample_value("eventbus_trigger_lag", {"trigger": "ns/t"}) is None
        assert board.subscribe("ns/t") is None
    finally:
        await board.stop()


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0.25, "250ms"), (42.9, "42s"), (187, "3m07s"), (7500, "2h05m"), (273600, "3d04h"),
])
def test_human_durations(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_table_columns_line_up() -> None:
    hints = [hint_for(_trigger("a"), Reading(4120, 187.0, None)), hint_for(_trigger("longer-name"), Reading(0))]
    lines = render_table(hints, {"ns/broken": "KafkaLagError: no broker"}).splitlines()
    assert lines[0].split() == ["TRIGGER", "SOURCE", "LAG", "BACKLOG", "AGE", "DESIRED", "ACTIVE", "PARTITIONS"]
    for col in ("SOURCE", "ACTIVE"):
        at = lines[0].index(col)
        assert all(ln[at - 1] == " " for ln in lines[1:3])
    assert "3m07s" in lines[1] and lines[1].index("4120") + 4 == lines[0].index("LAG") + 3  # right-aligned
    assert lines[3].startswith("ns/broken") and "error: KafkaLagError: no broker" in lines[3]
