"""Prometheus metrics of the delivery pipeline, one child per trigger resolved once (label lookups are slow)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The metric families; a runtime has one (tests may build one on a private registry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        lbl = ["trigger"]
        self.registry = registry
        self.received = Counter("eventbus_events_received_total", "Events taken from a source.", lbl,
                                registry=registry)
        self.delivered = Counter("eventbus_events_delivered_total", "Events the function accepted (2xx).", lbl,
                                 registry=registry)
        self.retried = Counter("eventbus_events_retried_total", "Dispatch retries.", lbl, registry=registry)
        self.dead_lettered = Counter("eventbus_events_dead_lettered_total", "Events written to the dead-letter sink.",
                                     lbl, registry=registry)
        self.filtered = Counter("eventbus_events_filtered_total", "Events settled without dispatch by the filter.",
                                lbl, registry=registry)
        self.dropped = Counter("eventbus_events_dropped_total",
                               "Failed events dropped because the trigger has no dead-letter sink.", lbl,
                               registry=registry)
        self.replies = Counter("eventbus_replies_total", "Reply events published.", lbl, registry=registry)
        self.sink_errors = Counter("eventbus_sink_errors_total",
                                   "Failed writes to dead-letter or reply sinks, by kind (permanent, transient).",
                                   [*lbl, "sink", "kind"], registry=registry)
        self.latency = Histogram("eventbus_dispatch_duration_seconds", "One dispatch attempt, request to response.",
                                 lbl, buckets=_LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("eventbus_events_in_flight", "Events taken but not yet settled.", lbl,
                               registry=registry)
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
        self.wakers: dict[str, Callable[[], None]] = {}
        """Trigger key -> the lag watcher's wake-up: called when an event is taken (see `_Received`)."""

    def for_trigger(self, trigger: str) -> TriggerMetrics:
        return TriggerMetrics(
            trigger=trigger,
            received=_Received(self.received.labels(trigger), self.wakers, trigger),
            delivered=self.delivered.labels(trigger),
            retried=self.retried.labels(trigger),
            dead_lettered=self.dead_lettered.labels(trigger),
            filtered=self.filtered.labels(trigger),
            dropped=self.dropped.labels(trigger),
            replies=self.replies.labels(trigger),
            latency=self.latency.labels(trigger),
            in_flight=self.in_flight.labels(trigger),
            # The trigger's own (local-assignment) lag goes to a private gauge: the exported
            # eventbus_trigger_lag comes from the lag watcher, which reads the broker.
            lag=Gauge("eventbus_local_lag", "private", registry=None),
            family=self,
        )


class Incrementing(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _Received:
    """The received counter of one trigger that also wakes its lag watcher, so a scaling hint reacts to
    the first event at once instead of at the next periodic read."""

    __slots__ = ("child", "key", "wakers")

    def __init__(self, child: Counter, wakers: dict[str, Callable[[], None]], key: str) -> None:
        self.child = child
        self.wakers = wakers
        self.key = key

    def inc(self, amount: float = 1) -> None:
        self.child.inc(amount)
        wake = self.wakers.get(self.key)
        if wake is not None:
            wake()


@dataclass(frozen=True, slots=True)
class TriggerMetrics:
    trigger: str
    received: Incrementing
    delivered: Counter
    retried: Counter
    dead_lettered: Counter
    filtered: Counter
    dropped: Counter
    replies: Counter
    latency: Histogram
    in_flight: Gauge
    lag: Gauge
    family: Metrics


_default: Metrics | None = None


def default_metrics() -> Metrics:
    """The process-wide metrics on prometheus_client's default registry (created once)."""
    global _default
    if _default is None:
        _default = Metrics()
    return _default
