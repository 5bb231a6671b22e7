"""The scaling hint: from a trigger's lag (and backlog age) to `desiredReplicas` and `active`.

Pure functions, so every output (KEDA gRPC, metrics-api, push, Prometheus, `eventbus lag`) computes the
same numbers. The rules follow KEDA's Kafka scaler, which users already know:

- `active = lag > activationLagThreshold`;
- while active, `desiredReplicas = ceil(lag / lagThreshold)` (+1 while the oldest waiting event is older
  than `maxBacklogAge`), at most `maxReplicas` and, for Kafka, at most the partition count unless
  `allowIdleConsumers` (KEDA caps the lag at `partitions * lagThreshold`: the same result);
- inactive: `minReplicas` (KEDA scales an inactive target to `minReplicaCount`); never below it.

Cron has no lag; `prewarm` makes it active with `max(1, minReplicas)` from `prewarm` before each tick
until the tick settles, so the function is warm when the tick fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from schemas.trigger import Scaling, Trigger

SourceKind = Literal["kafka", "jetstream", "nats", "http", "cron"]

TICK_SETTLE_GRACE = 1.0
"""Seconds after a tick during which it counts as unsettled even before its dispatch is seen in flight."""

ROW_KEYS = ("trigger", "source", "lag", "backlogAgeSeconds", "desiredReplicas", "active", "partitions")
"""The keys of a hint row, in order (`eventbus lag -o json`, `/scaling/<ns>/<name>`, the push CloudEvent)."""


def source_kind(trigger: Trigger) -> SourceKind:
    """`kafka`, `jetstream`, `nats` (core), `http` or `cron`: how `eventbus lag` names the source."""
    src = trigger.spec.source
    if src.nats is not None:
        return "jetstream" if src.nats.jetstream is not None else "nats"
    return src.kind


@dataclass(frozen=True, slots=True)
class Reading:
    """What a lag watcher read: events waiting, the age of the oldest (None when nothing waits or it is
    unknown), and the partition count (Kafka only)."""

    lag: int
    backlog_age: float | None = None
    partitions: int | None = None


@dataclass(frozen=True, slots=True)
class Hint:
    """One trigger's scaling hint: the row every output shows."""

    trigger: str
    source: SourceKind
    lag: int
    backlog_age_seconds: float | None
    desired_replicas: int
    active: bool
    partitions: int | None

    def row(self) -> dict[str, Any]:
        """The JSON row, with exactly the keys of ROW_KEYS."""
        age = None if self.backlog_age_seconds is None else round(self.backlog_age_seconds, 3)
        return {"trigger": self.trigger, "source": self.source, "lag": self.lag, "backlogAgeSeconds": age,
                "desiredReplicas": self.desired_replicas, "active": self.active, "partitions": self.partitions}

    def same_signal(self, other: Hint | None) -> bool:
        """Whether `other` says the same to an autoscaler (backlog age alone ticking on is no change)."""
        return (other is not None and other.lag == self.lag and other.desired_replicas == self.desired_replicas
                and other.active == self.active and other.partitions == self.partitions
                and (other.backlog_age_seconds is None) == (self.backlog_age_seconds is None))


def desired_replicas(scaling: Scaling, reading: Reading, *, kafka: bool) -> int:
    """KEDA's arithmetic (see the module docstring)."""
    active = reading.lag > scaling.activation_lag_threshold
    want = math.ceil(reading.lag / scaling.lag_threshold) if active else 0
    if (active and scaling.max_backlog_age is not None and reading.backlog_age is not None
            and reading.backlog_age > scaling.max_backlog_age):
        want += 1
    cap = scaling.max_replicas
    if kafka and not scaling.allow_idle_consumers and reading.partitions:
        cap = min(cap, reading.partitions)
    return max(scaling.min_replicas, min(want, cap))


def hint_for(trigger: Trigger, reading: Reading) -> Hint:
    """The hint of a trigger with a lag (every source but cron)."""
    kind = source_kind(trigger)
    scaling = trigger.spec.scaling
    return Hint(trigger=trigger.key, source=kind, lag=reading.lag,
                backlog_age_seconds=reading.backlog_age if reading.lag > 0 else None,
                desired_replicas=desired_replicas(scaling, reading, kafka=kind == "kafka"),
                active=reading.lag > scaling.activation_lag_threshold,
                partitions=reading.partitions if kind == "kafka" else None)


def cron_active(scaling: Scaling, *, now: float, next_tick: float | None, prev_tick: float | None,
                in_flight: int) -> bool:
    """Pre-warm: from `prewarm` before a tick until it settles (in flight, or just fired)."""
    if scaling.prewarm is None:
        return False
    if next_tick is not None and next_tick - now <= scaling.prewarm:
        return True
    if prev_tick is not None and 0 <= now - prev_tick < TICK_SETTLE_GRACE:
        return True
    return in_flight > 0


def cron_hint(trigger: Trigger, *, now: float, next_tick: float | None, prev_tick: float | None,
              in_flight: int) -> Hint:
    """A cron trigger's hint: no lag; active with `max(1, minReplicas)` inside the pre-warm window."""
    scaling = trigger.spec.scaling
    active = cron_active(scaling, now=now, next_tick=next_tick, prev_tick=prev_tick, in_flight=in_flight)
    desired = max(1, scaling.min_replicas) if active else scaling.min_replicas
    return Hint(trigger=trigger.key, source="cron", lag=0, backlog_age_seconds=None, desired_replicas=desired,
                active=active, partitions=None)


def metric_value(hint: Hint, scaling: Scaling) -> float:
    """The metric KEDA's HPA reads: the lag, capped (or raised) so that `ceil(value / lagThreshold)` is
    exactly `desiredReplicas`, the number every other output shows."""
    threshold = scaling.lag_threshold
    if math.ceil(hint.lag / threshold) == hint.desired_replicas:
        return float(hint.lag)
    return float(hint.desired_replicas * threshold)
