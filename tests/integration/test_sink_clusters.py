"""Sinks reach their cluster, and permanent sink failures are loud (issue 7 items 2 and 3), on the real servers.

The first test runs `eventbus run` the way a user does: a subprocess, a README-shaped Trigger (source
`bootstrapServers`, `deadLetter: {kafka: {topic}}`) and no EVENTBUS_* variable in its environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import nats
import pytest
from aiohttp import web
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

from eventbus.runtime import Runtime, RuntimeConfig
from schemas.cloudevent import CloudEvent
from schemas.loader import parse_triggers
from schemas.trigger import Trigger
from tests.conftest import KafkaAdmin
from tests.integration.support import REPO, FunctionServer, create_topic, produce, read_all
from triggers.delivery import Outcome, Pipeline
from triggers.metrics import Metrics

pytestmark = pytest.mark.integration


def _readme_trigger(topic: str, bootstrap: str) -> str:
    return f"""\
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: orders-to-billing, namespace: shop}}
spec:
  source:
    kafka: {{bootstrapServers: [{bootstrap}], topics: [{topic}], consumerGroup: {topic}-billing,
            initialOffset: earliest, ordering: partition}}
  function: {{name: billing, namespace: shop}}
  delivery:
    timeout: 5s
    retry: {{attempts: 2, backoff: exponential, delay: 10ms, maxDelay: 50ms}}
    deadLetter: {{kafka: {{topic: {topic}.dlq}}}}
    reply: {{kafka: {{topic: {topic}.replies}}}}
---
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: no-cluster, namespace: shop}}
spec:
  source: {{cron: {{schedule: "* * * * * *"}}}}
  function: {{name: billing, namespace: shop}}
  delivery:
    deadLetter: {{kafka: {{topic: {topic}.dlq}}}}
"""


def _env_without_eventbus() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _eventbus_validate(spec: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventbus", "validate", "-f", str(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def _spawn(cmd: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    with open(log_file, "wb") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _headers(rec: object) -> dict[str, bytes]:
    return dict(rec.headers)  # type: ignore[attr-defined]


async def test_readme_trigger_runs_without_any_kafka_default(kafka_bootstrap: str, unique_name: str,
                                                              tmp_path: Path) -> None:
    topic = unique_name
    for name in (topic, f"{topic}.dlq", f"{topic}.replies"):
        await create_topic(kafka_bootstrap, name)

    async def answer(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        if request.headers.get("ce-id") == "o-2":
            return web.Response(status=400, text="bad order")
        return web.json_response({"billed": request.headers.get("ce-id")})

    fn = await FunctionServer(behaviour=answer).start()
    spec = tmp_path / "orders.yaml"
    spec.write_text(_readme_trigger(topic, kafka_bootstrap))
    env = _env_without_eventbus()
    validate = await asyncio.to_thread(_eventbus_validate, spec, env)
    assert validate.returncode == 1
    assert "shop/no-cluster: spec.delivery.deadLetter.kafka.bootstrapServers" in validate.stderr
    assert "orders-to-billing" not in validate.stderr  # the README-shaped trigger is fine as written
    log_file = tmp_path / "run.log"
    proc = _spawn([sys.executable, "-m", "eventbus", "run", "-f", str(spec), "--gateway", fn.url,
                   "--grace", "5s", "--log-format", "json"], env, log_file)
    try:
        records = [(f"k{i}".encode(), json.dumps({"i": i}).encode(),
                    [("ce_specversion", b"1.0"), ("ce_id", f"o-{i}".encode()), ("ce_source", b"/shop"),
                     ("ce_type", b"com.example.order")]) for i in range(5)]
        await produce(kafka_bootstrap, topic, records)
        try:
            await fn.wait_for(lambda: sorted(fn.delivered_ids) == ["o-0", "o-1", "o-3", "o-4"], timeout=60,
                              what="the four good orders")
        except AssertionError:
            raise AssertionError(log_file.read_text()[-4000:]) from None
        dead = await read_all(kafka_bootstrap, f"{topic}.dlq", 1)
        assert [_headers(r)["ce_id"] for r in dead] == [b"o-2"]
        assert _headers(dead[0])["ce_deadlettercode"] == b"400"
        assert dead[0].key == b"k2"
        replies = await read_all(kafka_bootstrap, f"{topic}.replies", 4)
        assert sorted(json.loads(r.value)["billed"] for r in replies) == ["o-0", "o-1", "o-3", "o-4"]
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        await fn.stop()
    text = log_file.read_text()
    assert code == 0, text[-4000:]
    assert "KafkaConfigError" not in text and "Unclosed client session" not in text
    lines = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    refused = [ln for ln in lines if ln.get("trigger") == "shop/no-cluster" and ln.get("levelname", ln.get("level"))
               in ("ERROR", "error")]
    assert refused, text[-4000:]
    assert refused[0]["field"] == "spec.delivery.deadLetter.kafka.bootstrapServers"


# --- in-process: the sinks of a Runtime on the real servers ---------------------------------------------


def _trigger(name: str, delivery: str) -> Trigger:
    return parse_triggers(f"""\
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}, namespace: sinks}}
spec:
  source: {{cron: {{schedule: "@every 1h"}}}}
  function: {{url: "http://127.0.0.1:9/"}}
  delivery: {{{delivery}}}
""", "t.yaml")[0]


def _big_event(size: int) -> CloudEvent:
    return CloudEvent({"specversion": "1.0", "id": "big-1", "source": "/big", "type": "t.big",
                       "datacontenttype": "application/octet-stream"}, b"x" * size)


async def _pipeline(rt: Runtime, trigger: Trigger) -> Pipeline:
    return Pipeline(trigger, gateway=rt.gateway, metrics=rt.metrics.for_trigger(trigger.key),
                    dead_letter=await rt._sink(trigger, "dead_letter"))


async def test_dead_letter_too_large_for_kafka_goes_without_data(kafka_bootstrap: str, unique_name: str) -> None:
    dlq = f"{unique_name}.dlq"
    await create_topic(kafka_bootstrap, dlq)
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(kafka=kafka_bootstrap), metrics=Metrics(registry))
    await rt.gateway.start()
    try:
        trigger = _trigger("big", f"deadLetter: {{kafka: {{topic: {dlq}}}}}")
        pipeline = await _pipeline(rt, trigger)
        size = 3 * 1024 * 1024  # the broker's default message.max.bytes is about 1 MiB
        outcome = await asyncio.wait_for(pipeline.fail(_big_event(size), "function answered 413", 413, 1), 60)
        assert outcome is Outcome.DEAD_LETTERED
    finally:
        await rt.stop()
    [rec] = await read_all(kafka_bootstrap, dlq, 1)
    headers = _headers(rec)
    assert headers["ce_deadletterdataomitted"] == str(size).encode()
    assert headers["ce_id"] == b"big-1" and headers["ce_deadlettercode"] == b"413"
    assert not rec.value
    assert registry.get_sample_value("eventbus_sink_errors_total",
                                     {"trigger": "sinks/big", "sink": "dead-letter", "kind": "permanent"}) == 1


async def test_dead_letter_too_large_for_nats_goes_without_data(nats_url: str, unique_name: str) -> None:
    subject = f"{unique_name}.dlq"
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=unique_name, subjects=[subject]))
    sub = await js.subscribe(subject)
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(nats=nats_url), metrics=Metrics(registry))
    await rt.gateway.start()
    try:
        trigger = _trigger("bignats", f"deadLetter: {{nats: {{subject: {subject}}}}}")
        pipeline = await _pipeline(rt, trigger)
        size = nc.max_payload + 10
        outcome = await asyncio.wait_for(pipeline.fail(_big_event(size), "too slow", 0, 3), 30)
        assert outcome is Outcome.DEAD_LETTERED
        msg = await sub.next_msg(timeout=10)
        assert msg.headers is not None
        assert msg.headers["ce-deadletterdataomitted"] == str(size)
        assert msg.headers["ce-id"] == "big-1"
        assert msg.data == b""
    finally:
        await rt.stop()
        await js.delete_stream(unique_name)
        await nc.close()


async def test_permanent_sink_error_stalls_counts_and_degrades_until_fixed() -> None:
    status = {"code": 403}

    async def sink(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        return web.Response(status=status["code"], text="forbidden")

    server = await FunctionServer(behaviour=sink).start()
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(), metrics=Metrics(registry))
    await rt.gateway.start()
    try:
        trigger = _trigger("perm", f"deadLetter: {{url: '{server.url}/dlq'}}")
        pipeline = await _pipeline(rt, trigger)
        task = asyncio.create_task(pipeline.fail(_big_event(10), "function answered 400", 400, 1))
        labels = {"trigger": "sinks/perm", "sink": "dead-letter", "kind": "permanent"}
        for _ in range(100):
            if (registry.get_sample_value("eventbus_sink_errors_total", labels) or 0) >= 2:
                break
            await asyncio.sleep(0.05)
        assert (registry.get_sample_value("eventbus_sink_errors_total", labels) or 0) >= 2
        assert not task.done()  # stalled, nothing settled
        assert pipeline.degraded is not None and "403" in pipeline.degraded and "url:" in pipeline.degraded
        assert "sinks/perm" in rt.degraded()
        assert "403" in rt.readiness()["degraded"]["sinks/perm"]  # what /readyz shows beside its status
        status["code"] = 204
        assert await asyncio.wait_for(task, 10) is Outcome.DEAD_LETTERED
        assert pipeline.degraded is None and rt.degraded() == {}
        assert registry.get_sample_value("eventbus_sink_errors_total",
                                         {**labels, "kind": "transient"}) is None
    finally:
        await rt.stop()
        await server.stop()


async def test_deleted_dead_letter_topic_is_a_permanent_error_until_recreated(
        kafka_bootstrap: str, kafka_admin: KafkaAdmin, unique_name: str) -> None:
    dlq = f"{unique_name}.dlq"
    await kafka_admin.create_topic(dlq)
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(kafka=kafka_bootstrap), metrics=Metrics(registry))
    await rt.gateway.start()
    labels = {"trigger": "sinks/gone", "sink": "dead-letter", "kind": "permanent"}
    try:
        trigger = _trigger("gone", f"deadLetter: {{kafka: {{topic: {dlq}}}}}")
        pipeline = await _pipeline(rt, trigger)
        assert await pipeline.fail(_big_event(10), "first", 400, 1) is Outcome.DEAD_LETTERED
        await kafka_admin.delete_topic(dlq)
        task = asyncio.create_task(pipeline.fail(_big_event(10), "second", 400, 1))
        for _ in range(300):
            if registry.get_sample_value("eventbus_sink_errors_total", labels):
                break
            await asyncio.sleep(0.1)
        assert registry.get_sample_value("eventbus_sink_errors_total", labels), "no permanent error counted"
        assert not task.done() and "does not exist" in (pipeline.degraded or "")
        await kafka_admin.create_topic(dlq)
        assert await asyncio.wait_for(task, 60) is Outcome.DEAD_LETTERED
        assert pipeline.degraded is None
    finally:
        await rt.stop()
    [rec] = await read_all(kafka_bootstrap, dlq, 1)
    assert _headers(rec)["ce_deadletterreason"] == b"second"
