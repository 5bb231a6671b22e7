"""Prometheus metrics of cron triggers, on the registry of the runtime's `Metrics` (tests use private ones)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENESS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300)

SKIP_REASONS = ("forbid", "replaced", "missed", "deadline")
"""Why a tick did not fire: `forbid` (previous delivery still running), `replaced` (a running delivery
was cancelled by a newer tick under `Replace`), `missed` (passed while nobody was leader, older than the
starting deadline or beyond `catchUp.maxTicks`), `deadline` (woke up later than `startingDeadline`)."""


class CronMetrics:
    """`eventbus_cron_fires_total`, `eventbus_cron_skipped_total{reason}`, `eventbus_cron_lateness_seconds`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.fires = Counter("eventbus_cron_fires_total", "Cron ticks dispatched.", ["trigger"],
                             registry=registry)
        self.skipped = Counter("eventbus_cron_skipped_total", "Cron ticks not fired, by reason.",
                               ["trigger", "reason"], registry=registry)
        self.lateness = Histogram("eventbus_cron_lateness_seconds",
                                  "Dispatch start minus the tick's intended instant (scheduled time + jitter).",
                                  ["trigger"], buckets=_LATENESS_BUCKETS, registry=registry)


_by_registry: dict[int, tuple[CollectorRegistry, CronMetrics]] = {}


def cron_metrics(registry: CollectorRegistry) -> CronMetrics:
    """The cron metric families on `registry`, created once per registry."""
    found = _by_registry.get(id(registry))
    if found is None or found[0] is not registry:
        found = (registry, CronMetrics(registry))
        _by_registry[id(registry)] = found
    return found[1]
