"""Scaling hints against the real Kafka and NATS: `eventbus lag`, the /scaling route, KEDA's gRPC protocol,
pushes and cron pre-warm. Lag is read from the broker, so these tests also check that two runtimes, and
the CLI with no runtime at all, say the same."""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import nats
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

from eventbus import externalscaler_pb2 as pb
from eventbus import externalscaler_pb2_grpc as pb_grpc
from eventbus.runtime import Runtime, RuntimeConfig
from schemas.loader import parse_triggers
from tests.integration.support import REPO, FunctionServer, create_topic, group_members, produce
from triggers.kafka_trigger import KafkaTrigger
from triggers.metrics import Metrics
from triggers.scaling import ROW_KEYS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kafka_trigger(name: str, topic: str, url: str, *, scaling: str = "{}", initial: str = "earliest",
                  group: str | None = None, concurrency: int = 16) -> str:
    grp = f", consumerGroup: {group}" if group else ""
    return f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}, namespace: test}}
spec:
  source: {{kafka: {{topics: [{topic}], initialOffset: {initial}, ordering: none{grp}}}}}
  function: {{url: '{url}'}}
  delivery: {{concurrency: {concurrency}, timeout: 20s, retry: {{attempts: 1}}}}
  scaling: {scaling}
---
"""


class Gate:
    """A function that holds every request until released (a slow function)."""

    def __init__(self, fn: FunctionServer) -> None:
        self.open = asyncio.Event()

        async def held(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
            await self.open.wait()
            return web.Response(status=204)

        fn.behaviour = held


@pytest.fixture
async def gate(fn: FunctionServer) -> AsyncIterator[Gate]:
    """`fn` holds its requests until `gate.open` is set (always set at the end, so nothing hangs)."""
    g = Gate(fn)
    yield g
    g.open.set()


class Rt:
    """An in-process runtime on free admin (and KEDA) ports."""

    def __init__(self, fn: FunctionServer, kafka: str, nats_url: str | None = None, keda: bool = False) -> None:
        self.port = _free_port()
        self.keda_port = _free_port() if keda else None
        self.registry = CollectorRegistry()
        self.runtime = Runtime(RuntimeConfig(gateway=fn.url, kafka=kafka, nats=nats_url, grace=2.0,
                                             metrics_port=self.port, keda_port=self.keda_port),
                               metrics=Metrics(self.registry))

    async def start(self, yaml_text: str) -> Rt:
        await self.runtime.start(parse_triggers(yaml_text, "t.yaml"))
        for _ in range(200):
            if self.runtime.ready():
                return self
            await asyncio.sleep(0.05)
        raise AssertionError("runtime not ready")

    async def row(self, key: str) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.port}/scaling/{key}") as r:
            return r.status, await r.json()

    async def wait_row(self, key: str, cond: Any, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        row: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, row = await self.row(key)
            if status == 200 and cond(row):
                return row
            await asyncio.sleep(0.1)
        raise AssertionError(f"{key}: row never matched; last {row}")


@pytest.fixture
async def runtimes() -> AsyncIterator[list[Rt]]:
    made: list[Rt] = []
    yield made
    for rt in made:
        await rt.runtime.stop()


def eventbus_lag(spec: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventbus", "lag", "-f", str(spec), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))


# --- `eventbus lag` with no runtime ---------------------------------------------------------------------


async def test_lag_cli_reads_the_broker_with_no_consumer(kafka_bootstrap: str, unique_name: str,
                                                         tmp_path: Path) -> None:
    topic, n = unique_name, 45
    await create_topic(kafka_bootstrap, topic, partitions=3)
    await produce(kafka_bootstrap, topic, [(None, b"x", []) for _ in range(n)])
    spec = tmp_path / "t.yaml"
    spec.write_text(kafka_trigger("early", topic, "http://fn") + kafka_trigger("late", topic, "http://fn",
                                                                               initial="latest")
                    + kafka_trigger("idle-ok", topic, "http://fn", scaling="{allowIdleConsumers: true}"))
    out = eventbus_lag(spec, "-o", "json", "--kafka", kafka_bootstrap)
    assert out.returncode == 0, out.stderr
    rows = {r["trigger"]: r for r in json.loads(out.stdout)}
    assert all(tuple(r) == ROW_KEYS for r in rows.values())
    early = rows["test/early"]
    assert (early["source"], early["lag"], early["partitions"], early["active"]) == ("kafka", n, 3, True)
    assert early["desiredReplicas"] == min(math.ceil(n / 10), 3)  # capped at the partitions
    assert early["backlogAgeSeconds"] is not None and 0 <= early["backlogAgeSeconds"] < 60
    late = rows["test/late"]  # never committed, initialOffset latest: nothing waits (as KEDA)
    assert (late["lag"], late["desiredReplicas"], late["active"], late["backlogAgeSeconds"]) == (0, 0, False, None)
    assert rows["test/idle-ok"]["desiredReplicas"] == math.ceil(n / 10)
    table = eventbus_lag(spec, "--kafka", kafka_bootstrap)
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["TRIGGER", "SOURCE", "LAG", "BACKLOG", "AGE", "DESIRED", "ACTIVE", "PARTITIONS"]
    early_line = next(ln for ln in lines if ln.startswith("test/early "))
    assert early_line.split()[1:3] == ["kafka", str(n)] and early_line.split()[-2:] == ["yes", "3"]
    assert len({len(ln) for ln in [header, *lines]}) >= 1 and lines[0].index("kafka") == header.index("SOURCE")


# --- runtimes: in flight, drained, two replicas, backlog age ----------------------------------------------


async def test_two_runtimes_agree_in_flight_counts_and_drain_falls_to_min(
        kafka_bootstrap: str, unique_name: str, fn: FunctionServer, gate: Gate, runtimes: list[Rt]) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=2)
    spec = kafka_trigger("slow", topic, fn.url, scaling="{minReplicas: 1, lagThreshold: 2}")
    a = await Rt(fn, kafka_bootstrap).start(spec)
    runtimes.append(a)
    b = await Rt(fn, kafka_bootstrap).start(spec)
    runtimes.append(b)
    await _assigned(a, b, "test/slow", kafka_bootstrap)
    await produce(kafka_bootstrap, topic, [(f"k{i}".encode(), b"x", []) for i in range(6)])
    await _until(lambda: len(fn.received) == 6, "all six in flight")
    ra = await a.wait_row("test/slow", lambda r: r["lag"] == 6)  # fetched, in flight, not committed: lag
    rb = await b.wait_row("test/slow", lambda r: r["lag"] == 6)
    assert ra["desiredReplicas"] == rb["desiredReplicas"] == 2  # ceil(6/2) = 3, capped at 2 partitions
    assert ra["active"] and rb["active"]
    first_age = ra["backlogAgeSeconds"]
    assert first_age is not None
    await asyncio.sleep(1.2)
    later = await a.wait_row("test/slow", lambda r: r["backlogAgeSeconds"] >= first_age + 1.0)
    assert later["lag"] == 6  # stalled: the age grows, the lag stays
    gate.open.set()
    ra = await a.wait_row("test/slow", lambda r: r["lag"] == 0)
    rb = await b.wait_row("test/slow", lambda r: r["lag"] == 0)
    for r in (ra, rb):
        assert (r["desiredReplicas"], r["active"], r["backlogAgeSeconds"]) == (1, False, None)
    assert a.registry.get_sample_value("eventbus_trigger_desired_replicas", {"trigger": "test/slow"}) == 1
    assert a.registry.get_sample_value("eventbus_trigger_lag", {"trigger": "test/slow"}) == 0
    status, body = await a.row("test/nope")
    assert (status, body["error"]) == (404, "not_found")


async def _until(cond: Any, what: str, timeout: float = 20.0) -> None:
    """Poll (a held function never returns, so FunctionServer.wait_for would not re-check)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _assigned(a: Rt, b: Rt, key: str, bootstrap: str) -> None:
    """Wait until the two runtimes' consumers hold one partition each (the rebalance is over), and the
    broker's view of the group agrees: two members, one partition each."""
    held: list[list[int]] = []
    for _ in range(300):
        held = [sorted(tp.partition for tp in _kafka(rt, key).assignment()) for rt in (a, b)]
        if sorted(held) == [[0], [1]]:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"the two runtimes never split the partitions; they hold {held}")
    group = _kafka(a, key).adapter.group_id
    members: list[list[int]] = []
    for _ in range(50):
        members = await group_members(bootstrap, group)
        if sorted(m for m in members if m) == [[0], [1]]:  # a member holding nothing is not a share
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the broker does not see the partitions split: members hold {members}")


def _kafka(rt: Rt, key: str) -> KafkaTrigger:
    controller = rt.runtime._running[key].controller
    assert isinstance(controller, KafkaTrigger), controller
    return controller


# --- JetStream ---------------------------------------------------------------------------------------------


async def test_jetstream_before_and_after_the_consumer_exists(nats_url: str, kafka_bootstrap: str,
                                                              unique_name: str, fn: FunctionServer, gate: Gate,
                                                              runtimes: list[Rt], tmp_path: Path) -> None:
    stream, subject = f"S{unique_name}".replace("-", "_"), f"{unique_name}.orders"
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"{unique_name}.>"]))
        for i in range(5):
            await js.publish(subject, f"{i}".encode())
        await js.publish(f"{unique_name}.other", b"not for this trigger")
        spec = f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: js, namespace: test}}
spec:
  source: {{nats: {{subject: {subject}, ordering: none, jetstream: {{stream: {stream}}}}}}}
  function: {{url: '{fn.url}'}}
  delivery: {{concurrency: 2, timeout: 20s}}
"""
        path = tmp_path / "js.yaml"
        path.write_text(spec)
        out = eventbus_lag(path, "-o", "json", "--nats", nats_url)
        assert out.returncode == 0, out.stderr
        [row] = json.loads(out.stdout)
        assert (row["source"], row["lag"], row["partitions"], row["active"]) == ("jetstream", 5, None, True)
        assert row["backlogAgeSeconds"] is not None
        rt = await Rt(fn, kafka_bootstrap, nats_url).start(spec)
        runtimes.append(rt)
        await _until(lambda: len(fn.received) == 2, "two in flight")
        r = await rt.wait_row("test/js", lambda r: r["lag"] == 5)  # 2 ack-pending + 3 pending
        assert r["desiredReplicas"] == 1
        age = r["backlogAgeSeconds"]
        assert age is not None  # the first pending message's age, growing while stalled
        await rt.wait_row("test/js", lambda r: r["backlogAgeSeconds"] >= age + 1.0)
        gate.open.set()
        r = await rt.wait_row("test/js", lambda r: r["lag"] == 0)
        assert (r["active"], r["desiredReplicas"], r["backlogAgeSeconds"]) == (False, 0, None)
    finally:
        await nc.close()


# --- KEDA external scaler ------------------------------------------------------------------------------------


async def test_keda_external_scaler_calls(kafka_bootstrap: str, unique_name: str, fn: FunctionServer,
                                          gate: Gate, runtimes: list[Rt]) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=4)
    rt = await Rt(fn, kafka_bootstrap, keda=True).start(kafka_trigger("k", topic, fn.url,
                                                                      scaling="{lagThreshold: 5}"))
    runtimes.append(rt)
    ref = pb.ScaledObjectRef(name="billing", namespace="shop",
                             scalerMetadata={"triggerNamespace": "test", "triggerName": "k"})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
    await producer.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.keda_port}") as ch:
        stub = pb_grpc.ExternalScalerStub(ch)
        assert (await stub.IsActive(ref)).result is False
        spec = await stub.GetMetricSpec(ref)
        [ms] = spec.metricSpecs
        assert (ms.targetSize, ms.targetSizeFloat) == (5, 5.0)
        metrics = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=ms.metricName))
        assert [(v.metricName, v.metricValue, v.metricValueFloat) for v in metrics.metricValues] == \
            [(ms.metricName, 0, 0.0)]
        unknown = pb.ScaledObjectRef(scalerMetadata={"triggerNamespace": "test", "triggerName": "ghost"})
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.IsActive(unknown)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and "test/ghost" in (err.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=unknown, metricName="x"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub.StreamMetricSpec(ref):
                pass
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED

        stream = stub.StreamIsActive(ref)
        first = await stream.read()
        assert first.result is False  # the current state, at once
        started = time.perf_counter()
        await producer.send_and_wait(topic, b"wake up", partition=0)
        second = await asyncio.wait_for(stream.read(), 5)
        took = time.perf_counter() - started
        assert second.result is True
        assert took < 0.1, f"StreamIsActive said true {took * 1000:.0f} ms after the event was produced"
        stream.cancel()

        await producer.send_and_wait(topic, b"x", partition=1)
        for _ in range(10):  # 2 waiting (in flight), threshold 5: ceil(2/5) = 1 replica
            metrics = await stub.GetMetrics(pb.GetMetricsRequest(scaledObjectRef=ref, metricName=ms.metricName))
            if metrics.metricValues[0].metricValue == 2:
                break
            await asyncio.sleep(0.1)
        assert metrics.metricValues[0].metricValueFloat == 2.0
        assert (await stub.IsActive(ref)).result is True
    await producer.stop()


# --- push ---------------------------------------------------------------------------------------------------


async def test_push_receiver_gets_the_hint_and_a_dead_one_does_not_slow_delivery(
        kafka_bootstrap: str, unique_name: str, fn: FunctionServer, runtimes: list[Rt]) -> None:
    receiver = await FunctionServer().start()
    dead = f"http://127.0.0.1:{_free_port()}/hints"  # nothing listens there
    try:
        topic, other = unique_name, unique_name + "-b"
        await create_topic(kafka_bootstrap, topic)
        await create_topic(kafka_bootstrap, other)
        spec = (kafka_trigger("pushed", topic, fn.url, scaling=f"{{push: {{url: '{receiver.url}/hints'}}}}")
                + kafka_trigger("deadpush", other, fn.url, scaling=f"{{push: {{url: '{dead}'}}, "
                                "pushInterval: 100ms}"))
        rt = await Rt(fn, kafka_bootstrap).start(spec)
        runtimes.append(rt)
        await receiver.wait_for(lambda: len(receiver.received) >= 1, timeout=10, what="the initial hint")
        started = time.monotonic()
        await produce(kafka_bootstrap, other, [(None, f"{i}".encode(), []) for i in range(50)])
        await produce(kafka_bootstrap, topic, [(None, b"x", [])])
        await fn.wait_for(lambda: len(fn.delivered_ids) == 51, timeout=20, what="all 51 delivered")
        assert time.monotonic() - started < 10
        await receiver.wait_for(lambda: any(json.loads(r.body)["active"] for r in receiver.received),
                                timeout=10, what="an active hint")
        r = next(r for r in receiver.received if json.loads(r.body)["active"])
        assert (r.headers["ce-type"], r.headers["ce-subject"]) == ("dev.eventbus.scaling.hint", "test/pushed")
        data = json.loads(r.body)
        assert set(data) == {*ROW_KEYS, "function", "observedAt"}
        assert (data["trigger"], data["function"], data["lag"] >= 1) == ("test/pushed", fn.url, True)
        pusher = rt.runtime.scaling.pushers["test/deadpush"]
        assert pusher.sent == 0  # it kept failing, in its own task
    finally:
        await receiver.stop()


# --- cron pre-warm --------------------------------------------------------------------------------------------


async def test_cron_prewarm_turns_active_before_the_tick(kafka_bootstrap: str, fn: FunctionServer,
                                                         runtimes: list[Rt]) -> None:
    spec = f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: warm, namespace: test}}
spec:
  source: {{cron: {{schedule: "@every 5s"}}}}
  function: {{url: '{fn.url}'}}
  scaling: {{prewarm: 2s, minReplicas: 0}}
"""
    rt = await Rt(fn, kafka_bootstrap).start(spec)
    runtimes.append(rt)
    board = rt.runtime.scaling.board
    q = board.subscribe("test/warm")
    assert q is not None
    changes: list[tuple[float, bool, int]] = []

    async def record() -> None:
        while True:
            h = await q.get()
            changes.append((time.time(), h.active, h.desired_replicas))

    recorder = asyncio.create_task(record())
    try:
        await fn.wait_for(lambda: len(fn.received) >= 2, timeout=15, what="two ticks")
    finally:
        recorder.cancel()
    t1, t2 = (datetime.fromisoformat(r.headers["ce-time"].replace("Z", "+00:00")).timestamp()
              for r in fn.received[:2])
    # between the ticks: idle once the first settled, active again 2 s before the second
    idle = [c for c in changes if not c[1] and t1 < c[0] < t2 - 2.0]
    warm = [c for c in changes if c[1] and t2 - 2.1 <= c[0] < t2 - 1.5]
    assert idle and warm, f"ticks at {t1}, {t2}; hint changes {changes}"
    assert (idle[0][2], warm[0][2]) == (0, 1)


async def test_push_to_a_nats_subject(kafka_bootstrap: str, nats_url: str, unique_name: str, fn: FunctionServer,
                                      runtimes: list[Rt]) -> None:
    topic, subject = unique_name, f"{unique_name}.hints"
    await create_topic(kafka_bootstrap, topic)
    nc = await nats.connect(nats_url)
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_msg(msg: Any) -> None:
        await got.put({**json.loads(msg.data), "ce-type": (msg.headers or {}).get("ce-type")})

    await nc.subscribe(subject, cb=on_msg)
    try:
        spec = kafka_trigger("natspush", topic, fn.url,
                             scaling=f"{{push: {{nats: {{subject: {subject}}}}}, pushInterval: 200ms}}")
        rt = await Rt(fn, kafka_bootstrap, nats_url).start(spec)
        runtimes.append(rt)
        first = await asyncio.wait_for(got.get(), 10)
        assert (first["trigger"], first["active"], first["ce-type"]) == ("test/natspush", False,
                                                                         "dev.eventbus.scaling.hint")
        await produce(kafka_bootstrap, topic, [(None, b"x", [])])
        while True:
            hint = await asyncio.wait_for(got.get(), 10)
            if hint["active"]:
                break
        assert hint["lag"] >= 1 and hint["function"] == fn.url
    finally:
        await nc.close()
