"""The scaling hint's arithmetic, table-driven like KEDA's scaler tests."""

from __future__ import annotations

import math
from typing import Any

import pytest

from schemas.trigger import Scaling, Trigger
from triggers.scaling import ROW_KEYS, Reading, cron_hint, desired_replicas, hint_for, metric_value, source_kind


def _trigger(source: dict[str, Any], scaling: dict[str, Any] | None = None) -> Trigger:
    return Trigger.model_validate({
        "apiVersion": "eventbus.dev/v1alpha1", "kind": "Trigger", "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"source": source, "function": {"name": "f"}, "scaling": scaling or {}},
    })


KAFKA = {"kafka": {"topics": ["a"]}}

# (scaling overrides, lag, backlog age, partitions, expected desired, expected active)
CASES: list[tuple[str, dict[str, Any], int, float | None, int | None, int, bool]] = [
    ("idle", {}, 0, None, 3, 0, False),
    ("one event wakes", {}, 1, 1.0, 3, 1, True),
    ("exact multiple", {}, 20, None, 3, 2, True),
    ("rounds up", {}, 21, None, 3, 3, True),
    ("capped at partitions", {}, 1000, None, 3, 3, True),
    ("idle consumers allowed", {"allowIdleConsumers": True}, 1000, None, 3, 50, True),
    ("capped at maxReplicas", {"allowIdleConsumers": True, "maxReplicas": 7}, 1000, None, 3, 7, True),
    ("custom threshold", {"lagThreshold": 100}, 250, None, 10, 3, True),
    ("minReplicas when idle", {"minReplicas": 2}, 0, None, 3, 2, False),
    ("minReplicas floor", {"minReplicas": 2}, 5, None, 3, 2, True),
    ("minReplicas above partitions wins", {"minReplicas": 5, "maxReplicas": 6}, 1000, None, 3, 5, True),
    ("below activation", {"activationLagThreshold": 5}, 5, 9.0, 3, 0, False),
    ("above activation", {"activationLagThreshold": 5}, 6, None, 3, 1, True),
    ("old backlog adds a step", {"maxBacklogAge": "30s"}, 15, 31.0, 10, 3, True),
    ("young backlog adds nothing", {"maxBacklogAge": "30s"}, 15, 29.0, 10, 2, True),
    ("old backlog still capped", {"maxBacklogAge": "30s"}, 1000, 300.0, 3, 3, True),
    ("unknown partitions: no cap", {}, 100, None, None, 10, True),
]


@pytest.mark.parametrize(("name", "overrides", "lag", "age", "partitions", "desired", "active"), CASES,
                         ids=[c[0] for c in CASES])
def test_kafka_hint(name: str, overrides: dict[str, Any], lag: int, age: float | None, partitions: int | None,
                    desired: int, active: bool) -> None:
    t = _trigger(KAFKA, overrides)
    h = hint_for(t, Reading(lag, age, partitions))
    assert (h.desired_replicas, h.active, h.lag, h.partitions) == (desired, active, lag, partitions)
    assert h.backlog_age_seconds == (age if lag > 0 else None)
    value = metric_value(h, t.spec.scaling)
    assert math.ceil(value / t.spec.scaling.lag_threshold) == desired  # what KEDA's HPA computes


def test_defaults_follow_keda() -> None:
    s = Scaling()
    assert (s.lag_threshold, s.activation_lag_threshold, s.allow_idle_consumers) == (10, 0, False)
    assert s.push_interval == 1.0


def test_partition_cap_is_kafka_only() -> None:
    s = Scaling()
    assert desired_replicas(s, Reading(1000, None, 3), kafka=False) == 50
    js = _trigger({"nats": {"subject": "x", "jetstream": {"stream": "S"}}})
    h = hint_for(js, Reading(1000, None, 3))
    assert (h.source, h.partitions, h.desired_replicas) == ("jetstream", None, 50)


@pytest.mark.parametrize(("source", "kind"), [
    (KAFKA, "kafka"), ({"nats": {"subject": "x"}}, "nats"),
    ({"nats": {"subject": "x", "jetstream": {"stream": "S"}}}, "jetstream"),
    ({"http": {"path": "/h"}}, "http"), ({"cron": {"schedule": "@every 1m"}}, "cron"),
])
def test_source_kind(source: dict[str, Any], kind: str) -> None:
    assert source_kind(_trigger(source)) == kind


def test_row_has_exactly_the_contract_keys() -> None:
    row = hint_for(_trigger(KAFKA), Reading(3, 1.23456, 2)).row()
    assert tuple(row) == ROW_KEYS
    assert row == {"trigger": "ns/t", "source": "kafka", "lag": 3, "backlogAgeSeconds": 1.235,
                   "desiredReplicas": 1, "active": True, "partitions": 2}


CRON = {"cron": {"schedule": "@every 1m"}}

# (prewarm, now, next tick, previous tick, in flight, minReplicas, expected active, expected desired)
CRON_CASES: list[tuple[str, str | None, float, float | None, float | None, int, int, bool, int]] = [
    ("no prewarm", None, 100.0, 110.0, 40.0, 0, 0, False, 0),
    ("before the window", "30s", 100.0, 131.0, 71.0, 0, 0, False, 0),
    ("window opens", "30s", 100.0, 130.0, 70.0, 0, 0, True, 1),
    ("inside the window", "30s", 100.0, 101.0, 41.0, 0, 0, True, 1),
    ("just fired", "30s", 100.0, 160.0, 99.5, 0, 0, True, 1),
    ("still in flight", "30s", 100.0, 160.0, 95.0, 1, 0, True, 1),
    ("settled", "30s", 100.0, 160.0, 95.0, 0, 0, False, 0),
    ("minReplicas", "30s", 100.0, 110.0, 50.0, 0, 3, True, 3),
    ("minReplicas idle", "30s", 100.0, 150.0, 50.0, 0, 3, False, 3),
]


@pytest.mark.parametrize(("name", "prewarm", "now", "next_tick", "prev_tick", "in_flight", "min_r", "active",
                          "desired"), CRON_CASES, ids=[c[0] for c in CRON_CASES])
def test_cron_prewarm(name: str, prewarm: str | None, now: float, next_tick: float | None, prev_tick: float | None,
                      in_flight: int, min_r: int, active: bool, desired: int) -> None:
    scaling: dict[str, Any] = {"minReplicas": min_r}
    if prewarm:
        scaling["prewarm"] = prewarm
    h = cron_hint(_trigger(CRON, scaling), now=now, next_tick=next_tick, prev_tick=prev_tick, in_flight=in_flight)
    assert (h.active, h.desired_replicas, h.lag, h.source) == (active, desired, 0, "cron")


def test_prewarm_needs_cron() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"scaling.prewarm is only used with a cron source"):
        _trigger(KAFKA, {"prewarm": "30s"})


def test_push_sink_and_interval_parse() -> None:
    t = _trigger(KAFKA, {"push": {"url": "http://autoscaler/hints"}, "pushInterval": "250ms"})
    assert t.spec.scaling.push is not None and t.spec.scaling.push.url == "http://autoscaler/hints"
    assert t.spec.scaling.push_interval == 0.25


@pytest.mark.parametrize(("source", "push", "message"), [
    (KAFKA, {"kafka": {"topic": "a"}}, "scaling.push: topic 'a' is also a source topic"),
    ({"nats": {"subject": "o.>"}}, {"nats": {"subject": "o.hints"}}, "scaling.push: subject 'o.hints' is covered"),
])
def test_push_must_not_feed_the_trigger(source: dict[str, Any], push: dict[str, Any], message: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        _trigger(source, {"push": push})
