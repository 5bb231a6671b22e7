"""`eventbus run --kubernetes` against a real kube-apiserver, Kafka and a real function server.

One controller process per test (as users run it). Triggers are created, edited and deleted through the
API; the function server shows what runs, `status` shows what the controller reports.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from connectors.kube import KubeClient
from tests.integration.kube.support import (
    ControllerProcess,
    create_trigger,
    delete_trigger,
    get_trigger,
    patch_trigger,
    ready_condition,
    wait_status,
)
from tests.integration.support import FunctionServer, create_topic, produce

pytestmark = pytest.mark.integration


def cron(name: str, function: str, schedule: str = "* * * * * *") -> str:
    return (f"apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: {name}}}\n"
            f"spec:\n  source: {{cron: {{schedule: '{schedule}', leaseDuration: 3s}}}}\n"
            f"  function: {{name: {function}}}\n  delivery: {{timeout: 5s, retry: {{attempts: 1}}}}\n")


def kafka(name: str, topic: str, function: str) -> str:
    return (f"apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: {name}}}\n"
            f"spec:\n  source: {{kafka: {{topics: [{topic}], initialOffset: earliest}}}}\n"
            f"  function: {{name: {function}}}\n  delivery: {{timeout: 5s, retry: {{attempts: 2, delay: 10ms}}}}\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ce_headers(type_: str, id_: str) -> list[tuple[str, bytes]]:
    return [("ce_specversion", b"1.0"), ("ce_id", id_.encode()), ("ce_source", b"/test"),
            ("ce_type", type_.encode()), ("content-type", b"application/json")]


def paths(fn: FunctionServer) -> list[str]:
    return [r.path for r in fn.received]


async def test_cron_and_kafka_triggers_run_follow_edits_and_stop(
    kube: KubeClient, namespace: str, fn: FunctionServer, kafka_bootstrap: str, kubeconfig: str,
    kubectl: list[str], unique_name: str, tmp_path: Path,
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic)
    ctl = ControllerProcess(kubeconfig, namespace, fn.url, tmp_path / "ctl.log",
                            extra=["--kafka", kafka_bootstrap]).start()
    try:
        await create_trigger(kube, namespace, cron("tick", "tick"))
        await create_trigger(kube, namespace, kafka("orders", topic, "orders"))
        # a spec the CRD accepts but the models reject: not run, reported, the others unaffected
        await create_trigger(kube, namespace, cron("broken", "tick", schedule="61 * * * *"))

        broken = await wait_status(kube, namespace, "broken", reason="InvalidSpec", generation=1, timeout=30)
        cond = ready_condition(broken)
        assert cond["status"] == "False" and "spec.source.cron" in cond["message"], cond
        tick = await wait_status(kube, namespace, "tick", reason="Running", generation=1)
        assert tick["status"]["source"] == "cron:* * * * * *" and tick["status"]["function"] == "tick"
        orders = await wait_status(kube, namespace, "orders", reason="Running", generation=1)
        assert orders["status"]["source"] == f"kafka:{topic}"

        await fn.wait_for(lambda: f"/{namespace}/tick" in paths(fn), timeout=10, what="a cron tick")
        await produce(kafka_bootstrap, topic, [(None, b'{"n":1}', ce_headers("keep", "a1")),
                                               (None, b'{"n":2}', ce_headers("drop", "a2"))])
        await fn.wait_for(lambda: paths(fn).count(f"/{namespace}/orders") == 2, timeout=20, what="2 Kafka events")

        # edit: the cron trigger's function, the Kafka trigger's filter
        t0 = time.monotonic()
        await patch_trigger(kube, namespace, "tick", {"spec": {"function": {"name": "tock"}}})
        await patch_trigger(kube, namespace, "orders", {"spec": {"filter": {"attributes": {"type": "keep"}}}})
        await wait_status(kube, namespace, "tick", reason="Running", generation=2, timeout=2)
        await wait_status(kube, namespace, "orders", reason="Running", generation=2, timeout=2)
        await fn.wait_for(lambda: f"/{namespace}/tock" in paths(fn), timeout=3, what="a tick to the new function")
        assert time.monotonic() - t0 < 3.5  # within 2 s of the edit, plus up to 1 s to the next tick
        await produce(kafka_bootstrap, topic, [(None, b'{"n":3}', ce_headers("drop", "b1")),
                                               (None, b'{"n":4}', ce_headers("keep", "b2"))])
        await fn.wait_for(lambda: any(r.ce_id == "b2" for r in fn.received), timeout=20, what="the kept event")
        await asyncio.sleep(0.5)
        assert not any(r.ce_id == "b1" for r in fn.received), "the filter of generation 2 was not applied"

        # kubectl shows the columns
        out = await asyncio.to_thread(subprocess.run, [*kubectl, "get", "trg", "-n", namespace],
                                      capture_output=True, text=True, check=True)
        header = out.stdout.splitlines()[0].split()
        assert header[:6] == ["NAME", "SOURCE", "FUNCTION", "READY", "LAG", "DESIRED"], out.stdout
        rows = {line.split()[0]: line.split() for line in out.stdout.splitlines()[1:]}
        assert rows["orders"][1:4] == [f"kafka:{topic}", "orders", "True"], out.stdout
        assert rows["broken"][1:4] == ["cron", "tick", "False"], out.stdout

        # delete: delivery stops
        await delete_trigger(kube, namespace, "tick")
        await asyncio.sleep(1.5)
        before = paths(fn).count(f"/{namespace}/tock")
        await asyncio.sleep(2.5)
        assert paths(fn).count(f"/{namespace}/tock") == before, "a deleted cron trigger still fires"

        # the broken one, fixed, starts
        await patch_trigger(kube, namespace, "broken", {"spec": {"source": {"cron": {"schedule": "* * * * * *"}}}})
        await wait_status(kube, namespace, "broken", reason="Running", generation=2, timeout=5)
    finally:
        code = await ctl.aterminate()
        ctl.close()
    assert code == 0, ctl.log_text()[-3000:]


async def test_secret_created_later_starts_the_trigger(
    kube: KubeClient, namespace: str, fn: FunctionServer, kubeconfig: str, tmp_path: Path
) -> None:
    port = free_port()
    ctl = ControllerProcess(kubeconfig, namespace, fn.url, tmp_path / "ctl.log", extra=["--http-port", str(port)])
    ctl.start()
    hook = f"/hooks/{namespace}"
    try:
        await create_trigger(kube, namespace, (
            "apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {name: hook}\n"
            f"spec:\n  source: {{http: {{path: {hook}, auth: {{bearerTokenFrom: "
            "{secretKeyRef: {name: hook-token, key: token}}}}}\n"
            "  function: {name: hook}\n"))
        missing = await wait_status(kube, namespace, "hook", reason="SecretNotFound", timeout=30)
        assert "spec.source.http.auth.bearerTokenFrom" in ready_condition(missing)["message"]
        assert "hook-token" in ready_condition(missing)["message"]
        await kube._call(kube.core.create_namespaced_secret, namespace, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook-token"},
            "data": {"token": base64.b64encode(b"s3cret").decode()}})
        await wait_status(kube, namespace, "hook", reason="Running", timeout=10)
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{port}{hook}"
            async with http.post(url, json={"a": 1}) as resp:
                assert resp.status == 401
            async with http.post(url, json={"a": 1}, headers={"Authorization": "Bearer s3cret"}) as resp:
                assert resp.status < 300, await resp.text()
        await fn.wait_for(lambda: f"/{namespace}/hook" in paths(fn), timeout=5, what="the webhook event")
        events = await kube._call(kube.events.list_namespaced_event, namespace)
        reasons = {e["reason"] for e in events["items"]}
        assert {"SecretNotFound", "Running"} <= reasons, reasons
    finally:
        code = await ctl.aterminate()
        ctl.close()
    assert code == 0, ctl.log_text()[-3000:]


async def test_failing_function_is_reported_as_degraded(
    kube: KubeClient, namespace: str, kubeconfig: str, tmp_path: Path
) -> None:
    async def fail(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
        return web.Response(status=500)

    failing = await FunctionServer(behaviour=fail).start()
    ctl = ControllerProcess(kubeconfig, namespace, failing.url, tmp_path / "ctl.log").start()
    try:
        await create_trigger(kube, namespace, cron("flaky", "flaky"))
        await failing.wait_for(lambda: len(failing.received) >= 1, timeout=30, what="a tick")
        deadline = time.monotonic() + 20
        degraded: dict[str, str] = {}
        while time.monotonic() < deadline:
            obj = await get_trigger(kube, namespace, "flaky")
            conds = {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}
            degraded = conds.get("Degraded", {})
            if degraded.get("status") == "True":
                break
            await asyncio.sleep(0.2)
        assert degraded.get("reason") == "FunctionFailing", degraded
        assert "no event delivered" in degraded["message"]
        assert conds["Ready"]["status"] == "True"  # still running: it keeps trying
    finally:
        code = await ctl.aterminate()
        ctl.close()
        await failing.stop()
    assert code == 0, ctl.log_text()[-3000:]
