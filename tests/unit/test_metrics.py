"""The per-event numbers (plain attributes) export exactly what prometheus_client's own families would."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from triggers.metrics import LATENCY_BUCKETS, Metrics


def _samples(registry: CollectorRegistry, family: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect() if m.name == family for s in m.samples if not s.name.endswith("_created")}


def test_per_event_numbers_export_like_prometheus_client_families() -> None:
    ours = CollectorRegistry()
    metrics = Metrics(ours)
    ref = CollectorRegistry()
    received = Counter("eventbus_events_received_total", "x", ["trigger"], registry=ref)
    latency = Histogram("eventbus_dispatch_duration_seconds", "x", ["trigger"], buckets=LATENCY_BUCKETS, registry=ref)
    in_flight = Gauge("eventbus_events_in_flight", "x", ["trigger"], registry=ref)
    rnd = random.Random(7)
    for key in ("ns/a", "ns/b"):
        t = metrics.for_trigger(key)
        for _ in range(500):
            d = rnd.choice([*LATENCY_BUCKETS, 0.0, 0.0003, 0.04, 99.0, rnd.random()])  # bounds are `le`
            t.latency.observe(d)
            latency.labels(key).observe(d)
            t.received.inc()
            received.labels(key).inc()
        t.in_flight.inc(3)
        t.in_flight.dec()
        in_flight.labels(key).inc(2)
    for family in ("eventbus_events_received", "eventbus_dispatch_duration_seconds", "eventbus_events_in_flight"):
        got, want = _samples(ours, family), _samples(ref, family)
        assert got.keys() == want.keys(), family
        for k, v in want.items():
            assert abs(got[k] - v) < 1e-9, (family, k, got[k], v)
    assert metrics.in_flight() == 4 and metrics.in_flight("ns/a") == 2 and metrics.in_flight("ns/x") == 0


def test_a_trigger_added_again_keeps_counting() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.for_trigger("ns/a").delivered.inc()
    metrics.for_trigger("ns/a").delivered.inc()
    assert registry.get_sample_value("eventbus_events_delivered_total", {"trigger": "ns/a"}) == 2
