"""The reconciler's decisions and the status it leads to (pure logic; the API server tests are in
tests/integration/kube/)."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from schemas.trigger import Trigger
from triggers import reconciler as reconciler_module
from triggers.kube_status import desired_status
from triggers.reconciler import Outcome, Reconciler


class Ready:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()


class Runner:
    def __init__(self, fail: list[BaseException] | None = None) -> None:
        self.log: list[tuple[str, str]] = []
        self.running: dict[str, Trigger] = {}
        self.fail = fail or []

    async def add(self, trigger: Trigger) -> Ready:
        if self.fail:
            raise self.fail.pop(0)
        assert trigger.key not in self.running
        self.running[trigger.key] = trigger
        self.log.append(("add", trigger.key))
        return Ready()

    async def remove(self, key: str) -> None:
        self.running.pop(key, None)
        self.log.append(("remove", key))


class Secrets:
    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, Any]] = {}

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.data.get((namespace, name))


def obj(name: str, generation: int = 1, *, schedule: str = "* * * * *", function: str = "f",
        extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"apiVersion": "eventbus.dev/v1alpha1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": "ns", "generation": generation, "uid": f"uid-{name}",
                         "resourceVersion": "1"},
            "spec": {"source": {"cron": {"schedule": schedule}}, "function": {"name": function}, **(extra or {})}}


async def settle(r: Reconciler) -> None:
    for _ in range(5):
        await r.idle()
        await asyncio.sleep(0)


async def test_start_restart_on_generation_only_and_stop() -> None:
    runner = Runner()
    r = Reconciler(runner, Secrets())
    r.apply(obj("a"))
    await settle(r)
    assert runner.log == [("add", "ns/a")]
    assert (out := r.outcome("ns/a")) is not None and out.reason == "Running" and out.source == "cron:* * * * *"
    r.apply({**obj("a"), "status": {"observedGeneration": 1}})  # status-only change: nothing to do
    await settle(r)
    assert runner.log == [("add", "ns/a")]
    r.apply(obj("a", 2, function="g"))
    await settle(r)
    assert runner.log == [("add", "ns/a"), ("remove", "ns/a"), ("add", "ns/a")]
    assert runner.running["ns/a"].spec.function.name == "g"
    r.delete("ns/a")
    await settle(r)
    assert runner.log[-1] == ("remove", "ns/a") and r.outcome("ns/a") is None


async def test_invalid_spec_is_not_run_and_names_the_field_others_unaffected() -> None:
    runner = Runner()
    r = Reconciler(runner, Secrets())
    r.apply(obj("good"))
    r.apply(obj("bad", schedule="61 * * * *"))
    r.apply(obj("neg", extra={"delivery": {"retry": {"attempts": -1}}}))
    await settle(r)
    assert list(runner.running) == ["ns/good"]
    bad, neg = r.outcome("ns/bad"), r.outcome("ns/neg")
    assert bad is not None and bad.reason == "InvalidSpec"
    assert bad.message.startswith("spec.source.cron: invalid schedule")
    assert neg is not None and neg.reason == "InvalidSpec" and "spec.delivery.retry.attempts" in neg.message
    r.apply(obj("good", 2, schedule="61 * * * *"))  # an edit that breaks a running trigger stops it
    await settle(r)
    assert "ns/good" not in runner.running


async def test_missing_secret_is_retried_until_it_appears(monkeypatch: Any) -> None:
    monkeypatch.setattr(reconciler_module, "SECRET_RETRY", 0.05)
    secrets = Secrets()
    runner = Runner()
    r = Reconciler(runner, secrets)
    auth = {"bearerTokenFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}}
    doc = obj("hook")
    doc["spec"]["source"] = {"http": {"path": "/h", "auth": auth}}
    r.apply(doc)
    await settle(r)
    out = r.outcome("ns/hook")
    assert out is not None and out.reason == "SecretNotFound"
    assert out.message == "spec.source.http.auth.bearerTokenFrom.secretKeyRef: Secret ns/tok not found"
    secrets.data[("ns", "tok")] = {"data": {"t": base64.b64encode(b"v").decode()}}
    for _ in range(100):
        if "ns/hook" in runner.running:
            break
        await asyncio.sleep(0.02)
    started = runner.running["ns/hook"]
    src = started.spec.source.http
    assert src is not None and src.auth is not None and src.auth.bearer_token_from is not None
    assert os.environ[src.auth.bearer_token_from.env] == "v"
    await r.close()


async def test_unreachable_broker_is_reported_and_retried(monkeypatch: Any) -> None:
    runner = Runner(fail=[ConnectionError("refused")])
    r = Reconciler(runner, Secrets())
    r.apply(obj("a"))
    await settle(r)
    out = r.outcome("ns/a")
    assert out is not None and out.reason == "BrokerUnreachable" and out.degraded
    for _ in range(150):
        if "ns/a" in runner.running:
            break
        await asyncio.sleep(0.02)
    assert "ns/a" in runner.running
    await r.close()


def test_status_keeps_transition_time_until_the_condition_moves() -> None:
    first = desired_status(Outcome(1, "Starting", source="cron:x", function="f"), {}, "T1")
    assert [(c["type"], c["status"], c["lastTransitionTime"]) for c in first["conditions"]] == [
        ("Ready", "False", "T1"), ("Degraded", "False", "T1")]
    again = desired_status(Outcome(2, "SecretNotFound", "m"), first, "T2")
    assert again["conditions"][0]["lastTransitionTime"] == "T1" and again["observedGeneration"] == 2
    running = desired_status(Outcome(2, "Running"), again, "T3")
    assert running["conditions"][0] == {"type": "Ready", "status": "True", "reason": "Running", "message": "",
                                        "lastTransitionTime": "T3", "observedGeneration": 2}
    assert running["conditions"][1]["lastTransitionTime"] == "T1"


class StatusApi:
    def __init__(self) -> None:
        self.patches: list[tuple[float, dict[str, Any]]] = []
        self.events: list[str] = []

    async def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((asyncio.get_running_loop().time(), status))
        return {}

    async def create_event(self, regarding: dict[str, Any], *, type_: str, reason: str, note: str,
                           action: str, controller: str, instance: str) -> None:
        self.events.append(reason)


async def test_status_written_on_change_and_otherwise_at_most_every_interval() -> None:
    from triggers.kube_status import StatusWriter

    api = StatusApi()
    lag = {"value": 1}
    writer_box: list[StatusWriter] = []
    r = Reconciler(Runner(), Secrets(), on_change=lambda k: writer_box[0].changed(k))
    writer = StatusWriter(api, r, instance="me", is_leader=lambda: True, min_interval=0.5,
                          extra=lambda key: {"lag": lag["value"]})
    writer_box.append(writer)
    task = asyncio.create_task(writer.run())
    try:
        r.apply(obj("a"))
        for _ in range(50):
            if api.patches:
                break
            await asyncio.sleep(0.02)
        t0, first = api.patches[0]
        assert first["lag"] == 1 and first["observedGeneration"] == 1 and first["source"] == "cron:* * * * *"
        lag["value"] = 2  # not a condition: waits for the interval
        await asyncio.sleep(0.3)
        assert len(api.patches) == 1
        await asyncio.sleep(0.6)
        assert [p["lag"] for _, p in api.patches] == [1, 2] and api.patches[1][0] - t0 >= 0.5
        r.apply(obj("a", 2, schedule="61 * * * *"))  # a condition changes: written at once
        await asyncio.sleep(0.3)
        last = api.patches[-1][1]
        assert last["conditions"][0]["reason"] == "InvalidSpec" and last["observedGeneration"] == 2
        assert api.events == ["Running", "InvalidSpec"]
    finally:
        task.cancel()
        await r.close()


def test_secret_key_refs_outside_kubernetes_are_named() -> None:
    from schemas.loader import parse_triggers
    from triggers.secret_refs import kubernetes_only

    doc = ("apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {name: n, namespace: x}\nspec:\n"
           "  source: {nats: {subject: a, user: u, passwordFrom: {secretKeyRef: {name: s, key: k}}}}\n"
           "  function: {name: f}\n")
    [t] = parse_triggers(doc, "t.yaml")
    [problem] = kubernetes_only([t])
    assert problem.startswith("x/n spec.source.nats.passwordFrom.secretKeyRef: a Kubernetes Secret needs")
    bad = doc.replace("secretKeyRef: {name: s, key: k}", "env: P, secretKeyRef: {name: s, key: k}")
    try:
        parse_triggers(bad, "t.yaml")
    except Exception as exc:
        assert "set exactly one of env, secretKeyRef" in str(exc)
    else:
        raise AssertionError("both env and secretKeyRef accepted")
