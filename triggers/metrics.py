"""Prometheus metrics of the delivery pipeline. The per-event numbers are plain attributes the hot path adds to
without locks or label lookups; a collector exports them under the same families when scraped."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Count:
    """A per-event number kept as a plain attribute: the hot path adds to it without a lock or a label
    lookup (about a tenth of a prometheus_client child's cost); `Metrics` exports it when scraped."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: float = 0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class Durations:
    """A histogram kept as bucket counts (Prometheus `le` buckets, cumulated when scraped)."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self.counts[bisect_left(self.buckets, seconds)] += 1


class Waker(Protocol):
    """What wakes a trigger's lag watcher (the hint board's state of that trigger)."""

    wake_pending: bool
    """A re-read is already due: no need to call `wake` (the common case under load)."""

    def wake(self) -> None: ...


class _Received(Count):
    """The received count of one trigger that also wakes its lag watcher, so a scaling hint reacts to the
    first event at once instead of at the next periodic read."""

    __slots__ = ("key", "wakers")

    def __init__(self, wakers: dict[str, Waker], key: str) -> None:
        super().__init__()
        self.wakers = wakers
        self.key = key

    def inc(self, amount: float = 1) -> None:
        self.value += amount
        waker = self.wakers.get(self.key)
        if waker is not None and not waker.wake_pending:  # read here: no call per event while a read is due
            waker.wake()


_COUNTERS = (
    ("received", "eventbus_events_received", "Events taken from a source."),
    ("delivered", "eventbus_events_delivered", "Events the function accepted (2xx)."),
    ("retried", "eventbus_events_retried", "Dispatch retries."),
    ("dead_lettered", "eventbus_events_dead_lettered", "Events written to the dead-letter sink."),
    ("filtered", "eventbus_events_filtered", "Events settled without dispatch by the filter."),
    ("dropped", "eventbus_events_dropped", "Failed events dropped because the trigger has no dead-letter sink."),
    ("replies", "eventbus_replies", "Reply events published."),
)


@dataclass(frozen=True, slots=True)
class TriggerMetrics:
    """One trigger's per-event numbers (plain, see `Count`) and the families for the rest."""

    trigger: str
    received: Count
    delivered: Count
    retried: Count
    dead_lettered: Count
    filtered: Count
    dropped: Count
    replies: Count
    latency: Durations
    in_flight: Count
    lag: Gauge
    family: Metrics


class _PerEvent(Collector):
    """Exports every trigger's `TriggerMetrics` counts as the eventbus_events_* families."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def describe(self) -> Iterable[Metric]:
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> list[Metric]:
        triggers = list(self.owner.triggers.values()) if with_samples else []
        out: list[Metric] = []
        for attr, name, doc in _COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["trigger"])
            for t in triggers:
                c.add_metric([t.trigger], getattr(t, attr).value)
            out.append(c)
        h = HistogramMetricFamily("eventbus_dispatch_duration_seconds", "One dispatch attempt, request to response.",
                                  labels=["trigger"])
        for t in triggers:
            d = t.latency
            running = 0
            cumulative: list[tuple[str, float]] = []
            for bound, n in zip((*d.buckets, float("inf")), d.counts, strict=True):
                running += n
                cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            h.add_metric([t.trigger], cumulative, d.sum)
        out.append(h)
        g = GaugeMetricFamily("eventbus_events_in_flight", "Events taken but not yet settled.", labels=["trigger"])
        for t in triggers:
            g.add_metric([t.trigger], t.in_flight.value)
        out.append(g)
        return out


class Metrics:
    """The metric families; a runtime has one (tests may build one on a private registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        lbl = ["trigger"]
        self.registry = registry
        self.triggers: dict[str, TriggerMetrics] = {}
        """Trigger key -> its per-event numbers, exported by `_PerEvent` (kept across a trigger's re-add)."""
        registry.register(_PerEvent(self))
        self.sink_errors = Counter("eventbus_sink_errors_total",
                                   "Failed writes to dead-letter or reply sinks, by kind (permanent, transient).",
                                   [*lbl, "sink", "kind"], registry=registry)
        self.committed_offset = Gauge("eventbus_kafka_committed_offset", "Last committed offset.",
                                      ["trigger", "topic", "partition"], registry=registry)
        self.log_end_offset = Gauge("eventbus_kafka_log_end_offset", "Log-end offset (high watermark) seen.",
                                    ["trigger", "topic", "partition"], registry=registry)
        self.lag = Gauge("eventbus_trigger_lag", "Events waiting, read from the broker by the lag watcher "
                         "(Kafka: log-end minus committed over every partition; JetStream: pending + "
                         "ack-pending; HTTP and core NATS: in flight).", lbl, registry=registry)
        self.backlog_age = Gauge("eventbus_trigger_backlog_age_seconds", "Age of the oldest waiting event "
                                 "(0 when nothing waits).", lbl, registry=registry)
        self.desired_replicas = Gauge("eventbus_trigger_desired_replicas", "The scaling hint: replicas the "
                                      "function should run.", lbl, registry=registry)
        self.active = Gauge("eventbus_trigger_active", "1 while lag exceeds activationLagThreshold (or a cron "
                            "trigger is pre-warming).", lbl, registry=registry)
        self.abandoned = 0
        """Events a stop abandoned unsettled when its grace period ran out (source-driven triggers): the shutdown
        report reads it, so it does not rest on a watchdog thread sampling `in_flight` at the right instant."""
        self.wakers: dict[str, Waker] = {}
        """Trigger key -> the lag watcher's wake-up: called when an event is taken (see `_Received`)."""

    def for_trigger(self, trigger: str) -> TriggerMetrics:
        found = self.triggers.get(trigger)
        if found is not None:
            return found
        made = self.triggers[trigger] = TriggerMetrics(
            trigger=trigger,
            received=_Received(self.wakers, trigger),
            delivered=Count(),
            retried=Count(),
            dead_lettered=Count(),
            filtered=Count(),
            dropped=Count(),
            replies=Count(),
            latency=Durations(LATENCY_BUCKETS),
            in_flight=Count(),
            # The trigger's own (local-assignment) lag goes to a private gauge: the exported
            # eventbus_trigger_lag comes from the lag watcher, which reads the broker.
            lag=Gauge("eventbus_local_lag", "private", registry=None),
            family=self,
        )
        return made

    def in_flight(self, trigger: str | None = None) -> int:
        """Events taken but not yet settled, of one trigger or of all."""
        if trigger is not None:
            t = self.triggers.get(trigger)
            return 0 if t is None else int(t.in_flight.value)
        return int(sum(t.in_flight.value for t in self.triggers.values()))


_default: Metrics | None = None


def default_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's default registry (created once)."""
    global _default
    if _default is None:
        _default = Metrics()
    return _default
