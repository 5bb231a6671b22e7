"""Test peers for integration tests: a real aiohttp function server, Kafka topic helpers, runtime processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from eventbus.runtime import Runtime, RuntimeConfig
from schemas.loader import parse_triggers
from triggers.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def ce_id(self) -> str | None:
        return self.headers.get("ce-id")


Behaviour = Callable[[web.Request, bytes, int], Awaitable[web.StreamResponse]]


async def _ok(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
    return web.Response(status=204)


@dataclass
class FunctionServer:
    """A real HTTP server standing in for the gateway: records every request, answers per `behaviour`."""

    behaviour: Behaviour = _ok
    received: list[Received] = field(default_factory=list)
    delivered_ids: list[str] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None
    _calls: dict[str, int] = field(default_factory=dict)
    _waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        rec = Received(request.path, headers, body)
        key = headers.get("ce-id") or body.decode(errors="replace")
        n = self._calls.get(key, 0) + 1
        self._calls[key] = n
        self.received.append(rec)
        self._check()  # a waiter on what was received must not wait for a slow behaviour's answer
        resp = await self.behaviour(request, body, n)
        if 200 <= resp.status < 300 and rec.ce_id is not None:
            self.delivered_ids.append(rec.ce_id)
        self._check()
        return resp

    def _check(self) -> None:
        for cond, fut in list(self._waiters):
            if not fut.done() and cond():
                fut.set_result(None)

    async def wait_for(self, cond: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        if cond():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((cond, fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or cond}; "
                f"received {len(self.received)} requests, {len(self.delivered_ids)} delivered"
            ) from None

    async def start(self) -> FunctionServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr,attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class RuntimeHarness:
    """An in-process `Runtime` against the real servers, with a private metrics registry per test."""

    def __init__(self, fn: FunctionServer, *, kafka: str | None = None, nats: str | None = None) -> None:
        self.fn = fn
        self.bootstrap = kafka or ""
        self.nats_url = nats or ""
        self.registry = CollectorRegistry()
        self.runtime = Runtime(RuntimeConfig(gateway=fn.url, kafka=kafka, nats=nats, grace=5.0),
                               metrics=Metrics(self.registry))

    async def start(self, yaml_text: str, *, wait_ready: bool = True) -> None:
        await self.runtime.start(parse_triggers(yaml_text, "test.yaml"))
        if wait_ready:
            for _ in range(200):
                if self.runtime.ready():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError("trigger not ready")

    def metric(self, name: str, trigger: str) -> float:
        v = self.registry.get_sample_value(name, {"trigger": trigger})
        return 0.0 if v is None else v

    async def wait_metric(self, name: str, trigger: str, want: float, timeout: float = 10.0) -> None:
        """The function answers before the runtime counts: wait for the counter to catch up."""
        for _ in range(int(timeout / 0.05)):
            if self.metric(name, trigger) >= want:
                break
            await asyncio.sleep(0.05)
        assert self.metric(name, trigger) == want, f"{name}{{trigger={trigger}}}"


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve `app` on a free loopback port; returns its runner (`await runner.cleanup()`) and base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


# --- Kafka helpers ------------------------------------------------------------------------------


async def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    # wait until the metadata shows every partition with a leader
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for _ in range(100):
            parts = await producer.partitions_for(name)
            if parts and len(parts) == partitions:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"topic {name} did not get {partitions} partitions")
    finally:
        await producer.stop()


Record = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]


async def produce(
    bootstrap: str, topic: str, records: list[Record], partition: int | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futs = [
            await producer.send(topic, value=v, key=k, headers=h, partition=partition) for k, v, h in records
        ]
        await asyncio.gather(*futs)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[Any]:
    """Read `expect` records of a topic from the beginning (no group); fail if fewer arrive in time."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out


async def committed(bootstrap: str, group: str, topic: str, partitions: int = 1) -> dict[int, int | None]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        res = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    out: dict[int, int | None] = dict.fromkeys(range(partitions))
    for tp, om in res.items():
        if isinstance(tp, TopicPartition) and tp.topic == topic:
            out[tp.partition] = om.offset if om.offset >= 0 else None
    return out


def trigger_yaml(name: str, topic: str, *, namespace: str = "test", url: str | None = None,
                 extra_delivery: str = "", ordering: str = "partition", concurrency: int = 16,
                 group: str | None = None, filter_type: str | None = None, retry: str = "",
                 event_type: str | None = None, bootstrap: str | None = None) -> str:
    lines = [
        "apiVersion: eventbus.dev/v1alpha1",
        "kind: Trigger",
        f"metadata: {{name: {name}, namespace: {namespace}}}",
        "spec:",
        "  source:",
        "    kafka:",
        f"      topics: [{topic}]",
        f"      ordering: {ordering}",
        "      initialOffset: earliest",
    ]
    if bootstrap:
        lines.append(f"      bootstrapServers: [{bootstrap}]")
    if group:
        lines.append(f"      consumerGroup: {group}")
    if event_type:
        lines.append(f"  event: {{type: {event_type}}}")
    if filter_type:
        lines.append(f"  filter: {{attributes: {{type: {filter_type}}}}}")
    lines.append(f"  function: {{url: '{url}'}}" if url else f"  function: {{name: {name}}}")
    lines.append("  delivery:")
    lines.append(f"    concurrency: {concurrency}")
    lines.append("    timeout: 5s")
    lines.append(f"    retry: {{attempts: 3, delay: 10ms, maxDelay: 50ms{retry}}}")
    if extra_delivery:
        lines.extend("    " + ln for ln in extra_delivery.strip().splitlines())
    return "\n".join(lines) + "\n"


# --- runtime processes --------------------------------------------------------------------------


class RuntimeProcess:
    """`eventbus run` in a child process: the way users run it, so kill -9 and SIGTERM are real."""

    def __init__(self, spec_file: Path, gateway: str, bootstrap: str, log_file: Path,
                 extra: list[str] | None = None) -> None:
        self.cmd = [sys.executable, "-m", "eventbus", "run", "-f", str(spec_file), "--gateway", gateway,
                    "--kafka", bootstrap, "--log-format", "json", *(extra or [])]
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RuntimeProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    async def aterminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait in a thread: a test's function server shares the test's loop, and a runtime
        draining an in-flight request to it would never finish if the loop were blocked in `wait`."""
        return await asyncio.to_thread(self.terminate, timeout)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


async def group_members(bootstrap: str, group: str) -> list[list[int]]:
    """The partitions each member of `group` holds, as the group coordinator sees them."""
    from aiokafka.protocol.group import MemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [desc] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    out: list[list[int]] = []
    for member in desc.groups[0][5]:  # (member_id, [group_instance_id,] client_id, host, metadata, assignment)
        if not member[-1]:  # mid-rebalance: no assignment yet
            out.append([])
            continue
        assignment = MemberAssignment.decode(member[-1])
        out.append(sorted(p for _, parts in assignment.assignment for p in parts))
    return out
