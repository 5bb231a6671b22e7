"""NATS → gateway delivery against a real NATS server (JetStream and core) and a real HTTP function server."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, StorageType

from tests.integration.support import FunctionServer, RuntimeProcess
from tests.integration.support import RuntimeHarness as Harness

pytestmark = pytest.mark.integration


def nats_trigger_yaml(name: str, subject: str, *, stream: str | None = None, namespace: str = "test",
                      ordering: str = "partition", concurrency: int = 16, timeout: str = "5s",
                      retry: str = "{attempts: 3, delay: 10ms, maxDelay: 50ms}", extra_delivery: str = "",
                      event_type: str | None = None, servers: str | None = None,
                      queue_group: str | None = None) -> str:
    lines = [
        "apiVersion: eventbus.dev/v1alpha1",
        "kind: Trigger",
        f"metadata: {{name: {name}, namespace: {namespace}}}",
        "spec:",
        "  source:",
        "    nats:",
        f"      subject: '{subject}'",
        f"      ordering: {ordering}",
    ]
    if servers:
        lines.append(f"      servers: ['{servers}']")
    if queue_group:
        lines.append(f"      queueGroup: {queue_group}")
    if stream:
        lines.append(f"      jetstream: {{stream: {stream}}}")
    if event_type:
        lines.append(f"  event: {{type: {event_type}}}")
    lines.append(f"  function: {{name: {name}}}")
    lines.append("  delivery:")
    lines.append(f"    concurrency: {concurrency}")
    lines.append(f"    timeout: {timeout}")
    lines.append(f"    retry: {retry}")
    if extra_delivery:
        lines.extend("    " + ln for ln in extra_delivery.strip().splitlines())
    return "\n".join(lines) + "\n"


def ce_headers(eid: str, **extra: str) -> dict[str, str]:
    h = {"ce-specversion": "1.0", "ce-id": eid, "ce-source": "/orders", "ce-type": "com.example.order.created",
         "ce-datacontenttype": "application/json"}
    h.update({f"ce-{k}": v for k, v in extra.items()})
    return h


async def connect(url: str) -> Client:
    return await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)


async def make_stream(url: str, name: str, subjects: list[str]) -> None:
    nc = await connect(url)
    try:
        await nc.jetstream().add_stream(name=name, subjects=subjects, storage=StorageType.FILE)
    finally:
        await nc.close()


async def js_publish(url: str, items: list[tuple[str, bytes, dict[str, str] | None]]) -> None:
    nc = await connect(url)
    try:
        js = nc.jetstream()
        for subject, data, headers in items:
            await js.publish(subject, data, headers=headers)
    finally:
        await nc.close()


async def consumer_state(url: str, stream: str, durable: str) -> tuple[int, int]:
    nc = await connect(url)
    try:
        info = await nc.jetstream().consumer_info(stream, durable)
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)
    finally:
        await nc.close()


async def wait_consumer_settled(url: str, stream: str, durable: str, timeout: float = 15.0) -> None:
    state = (-1, -1)
    for _ in range(int(timeout / 0.2)):
        state = await consumer_state(url, stream, durable)
        if state == (0, 0):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"consumer {stream}/{durable}: num_pending, num_ack_pending = {state}, want (0, 0)")


async def read_stream(url: str, stream: str, subject: str, expect: int, timeout: float = 15.0) -> list[Any]:
    nc = await connect(url)
    out: list[Any] = []
    try:
        sub = await nc.jetstream().pull_subscribe(subject, stream=stream,
                                                  config=ConsumerConfig(ack_wait=30))
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            try:
                out.extend(await sub.fetch(expect - len(out), timeout=0.5))
            except nats.errors.TimeoutError:
                pass
    finally:
        await nc.close()
    return out


@pytest.fixture
async def harness(nats_url: str, fn: FunctionServer) -> AsyncIterator[Harness]:
    h = Harness(fn, nats=nats_url)
    yield h
    await h.runtime.stop()


# --- JetStream: decoding -----------------------------------------------------------------------


async def test_jetstream_binary_pass_through_and_ack(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), f"{unique_name}.orders"
    await make_stream(harness.nats_url, stream, [f"{unique_name}.>"])
    await js_publish(harness.nats_url, [(subj, b'{"n": 1}', ce_headers(
        "ev-1", subject="Euro%20%E2%82%AC", comexampleext="x%20y", time="2026-11-28T10:00:00.123+01:00"))])
    await harness.start(nats_trigger_yaml("bin", f"{unique_name}.>", stream=stream, namespace="shop"))
    await harness.fn.wait_for(lambda: len(harness.fn.delivered_ids) >= 1, what="one delivery")
    r = harness.fn.received[0]
    assert r.path == "/shop/bin"
    assert (r.headers["ce-id"], r.headers["ce-source"], r.headers["ce-type"]) == (
        "ev-1", "/orders", "com.example.order.created")
    assert r.headers["ce-subject"] == "Euro%20%E2%82%AC"
    assert r.headers["ce-comexampleext"] == "x%20y"
    assert r.headers["ce-time"] == "2026-11-28T10:00:00.123+01:00"
    assert r.headers["content-type"] == "application/json"
    assert r.body == b'{"n": 1}'
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-shop-bin")
    await harness.wait_metric("eventbus_events_delivered_total", "shop/bin", 1)


async def test_jetstream_structured_pass_through(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), f"{unique_name}.s"
    await make_stream(harness.nats_url, stream, [subj])
    ev = {"specversion": "1.0", "id": "s-1", "source": "urn:x", "type": "t.s", "subject": "sub",
          "datacontenttype": "text/plain", "data": "hello", "myint": 7, "mybool": True}
    await js_publish(harness.nats_url, [(subj, json.dumps(ev).encode(),
                                         {"Content-Type": "application/cloudevents+json"})])
    await harness.start(nats_trigger_yaml("st", subj, stream=stream))
    await harness.fn.wait_for(lambda: len(harness.fn.delivered_ids) >= 1, what="one delivery")
    r = harness.fn.received[0]
    assert (r.headers["ce-id"], r.headers["ce-source"], r.headers["ce-type"]) == ("s-1", "urn:x", "t.s")
    assert r.headers["ce-subject"] == "sub"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["ce-myint"] == "7"
    assert r.headers["ce-mybool"] == "true"
    assert r.body == b"hello"


async def test_jetstream_raw_wrapped_with_stream_sequence_id(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), f"{unique_name}.raw"
    await make_stream(harness.nats_url, stream, [subj])
    await js_publish(harness.nats_url, [(subj, b'{"raw": true}', {"Content-Type": "application/json"}),
                                        (subj, b"\x00\x01binary", None)])
    await harness.start(nats_trigger_yaml("raw", subj, stream=stream, event_type="com.example.raw"))
    await harness.fn.wait_for(lambda: len(harness.fn.delivered_ids) >= 2, what="two deliveries")
    a, b = harness.fn.received[:2]
    assert a.headers["ce-id"] == f"{stream}/1"
    assert b.headers["ce-id"] == f"{stream}/2"
    assert a.headers["ce-source"] == f"nats://{subj}"
    assert a.headers["ce-type"] == "com.example.raw"
    assert a.headers["content-type"] == "application/json"
    assert a.headers["ce-time"].endswith("Z")
    assert a.body == b'{"raw": true}'
    assert b.body == b"\x00\x01binary"


# --- JetStream: retries, dead letters, replies ---------------------------------------------------


async def test_retry_by_nak_honours_delay_then_succeeds(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), unique_name
    await make_stream(harness.nats_url, stream, [subj])
    times: list[float] = []

    async def flaky(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        times.append(time.monotonic())
        if n < 3:
            return web.Response(status=503, headers={"Retry-After": "1"})
        return web.Response(status=200)

    harness.fn.behaviour = flaky
    await js_publish(harness.nats_url, [(subj, b"{}", ce_headers("ev-r"))])
    await harness.start(nats_trigger_yaml("retry", subj, stream=stream,
                                          retry="{attempts: 5, delay: 10ms, maxDelay: 5s}"))
    await harness.fn.wait_for(lambda: harness.fn.delivered_ids == ["ev-r"], what="delivery after naks")
    assert len(harness.fn.received) == 3
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.9 <= g < 4.0 for g in gaps), f"redelivery gaps {gaps} (Retry-After: 1 → nak delay ~1s)"
    await harness.wait_metric("eventbus_events_delivered_total", "test/retry", 1)
    assert harness.metric("eventbus_events_retried_total", "test/retry") == 2
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-test-retry")


async def test_4xx_dead_lettered_to_nats_stream_and_source_acked(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), unique_name
    dl_stream, dl_subj = f"{stream}-DLQ", f"{unique_name}-dlq"
    await make_stream(harness.nats_url, stream, [subj])
    await make_stream(harness.nats_url, dl_stream, [dl_subj])

    async def reject(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        return web.Response(status=422, text="bad order")

    harness.fn.behaviour = reject
    await js_publish(harness.nats_url, [(subj, b'{"n": 1}', ce_headers("ev-1", partitionkey="pk"))])
    await harness.start(nats_trigger_yaml("dl", subj, stream=stream,
                                          extra_delivery=f"deadLetter: {{nats: {{subject: {dl_subj}}}}}"))
    recs = await read_stream(harness.nats_url, dl_stream, dl_subj, 1)
    assert len(recs) == 1
    assert len(harness.fn.received) == 1  # not retried
    h = recs[0].headers
    assert h["ce-id"] == "ev-1" and h["ce-type"] == "com.example.order.created"
    assert h["ce-partitionkey"] == "pk"
    assert h["ce-deadlettercode"] == "422"
    assert h["ce-deadletterattempts"] == "1"
    assert h["ce-deadlettertrigger"] == "test/dl"
    assert "422" in h["ce-deadletterreason"]
    assert h["ce-deadlettertime"].endswith("Z")
    assert h["Nats-Msg-Id"] == "test/dl:dead_letter:/orders:ev-1"
    assert recs[0].data == b'{"n": 1}'
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-test-dl")
    await harness.wait_metric("eventbus_events_dead_lettered_total", "test/dl", 1)


async def test_retries_exhausted_by_delivery_count_dead_lettered(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), unique_name
    dl_stream, dl_subj = f"{stream}-DLQ", f"{unique_name}-dlq"
    await make_stream(harness.nats_url, stream, [subj])
    await make_stream(harness.nats_url, dl_stream, [dl_subj])

    async def down(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        return web.Response(status=500)

    harness.fn.behaviour = down
    await js_publish(harness.nats_url, [(subj, b"{}", ce_headers("ev-x"))])
    await harness.start(nats_trigger_yaml("ex", subj, stream=stream,
                                          extra_delivery=f"deadLetter: {{nats: {{subject: {dl_subj}}}}}"))
    recs = await read_stream(harness.nats_url, dl_stream, dl_subj, 1)
    h = recs[0].headers
    assert h["ce-deadletterattempts"] == "3"
    assert h["ce-deadlettercode"] == "500"
    assert "exhausted" in h["ce-deadletterreason"]
    assert len(harness.fn.received) == 3
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-test-ex")


async def test_reply_published_to_nats(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), unique_name
    rep_stream, rep_subj = f"{stream}-REP", f"{unique_name}-replies"
    await make_stream(harness.nats_url, stream, [subj])
    await make_stream(harness.nats_url, rep_stream, [rep_subj])

    async def answer(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        return web.json_response({"total": 42})

    harness.fn.behaviour = answer
    await js_publish(harness.nats_url, [(subj, b"{}", ce_headers("ev-q"))])
    await harness.start(nats_trigger_yaml("rep", subj, stream=stream,
                                          extra_delivery=f"reply: {{nats: {{subject: {rep_subj}}}}}"))
    recs = await read_stream(harness.nats_url, rep_stream, rep_subj, 1)
    h = recs[0].headers
    assert h["ce-type"] == "com.example.order.created.reply"
    assert h["ce-id"] == "ev-q"
    assert h["Nats-Msg-Id"].startswith("test/rep:reply:") and h["Nats-Msg-Id"].endswith(":ev-q")
    assert json.loads(recs[0].data) == {"total": 42}
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-test-rep")


async def test_create_stream_and_lag_gauge(harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), unique_name
    gate = asyncio.Event()

    async def held(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=204)

    harness.fn.behaviour = held
    yaml_text = nats_trigger_yaml("lag", subj, stream=stream, ordering="partition").replace(
        f"jetstream: {{stream: {stream}}}", f"jetstream: {{stream: {stream}, createStream: true}}")
    await harness.start(yaml_text)
    await js_publish(harness.nats_url, [(subj, b"{}", ce_headers(f"l-{i}")) for i in range(10)])
    for _ in range(100):
        if harness.metric("eventbus_trigger_lag", "test/lag") == 10:
            break
        await asyncio.sleep(0.1)
    assert harness.metric("eventbus_trigger_lag", "test/lag") == 10  # 1 in flight + 9 held on the lane
    gate.set()
    await harness.fn.wait_for(lambda: len(harness.fn.delivered_ids) == 10, what="ten deliveries")
    assert harness.fn.delivered_ids == [f"l-{i}" for i in range(10)]  # partition ordering: in order
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-test-lag")


# --- crashes and restarts -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_kill9_of_runtime_process_redelivers_with_same_ids(
    nats_url: str, unique_name: str, tmp_path: Path
) -> None:
    async def slowish(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.01)
        return web.Response(status=204)

    fn = await FunctionServer(behaviour=slowish).start()
    stream, subj = unique_name.upper(), f"{unique_name}.*"
    await make_stream(nats_url, stream, [subj])
    # raw payloads: the ids are minted from the stream sequence, so a redelivery must reproduce them
    await js_publish(nats_url, [(f"{unique_name}.k{i % 7}", json.dumps({"i": i}).encode(), None)
                                for i in range(1500)])
    ids = {f"{stream}/{seq}" for seq in range(1, 1501)}
    spec = tmp_path / "crash.yaml"
    spec.write_text(nats_trigger_yaml("crash", subj, stream=stream, ordering="key", concurrency=32, timeout="1s"))
    p1 = RuntimeProcess(spec, fn.url, "127.0.0.1:1", tmp_path / "rt1.log", extra=["--nats", nats_url]).start()
    try:
        try:
            await fn.wait_for(lambda: len(fn.delivered_ids) >= 300, timeout=40, what="300 deliveries")
        except AssertionError:
            raise AssertionError(p1.log_text()[-4000:]) from None
        p1.kill9()
    finally:
        p1.close()
    assert len(set(fn.delivered_ids)) < len(ids), "the kill should land mid-stream"
    p2 = RuntimeProcess(spec, fn.url, "127.0.0.1:1", tmp_path / "rt2.log", extra=["--nats", nats_url]).start()
    try:
        # the messages in flight at the kill come back after ackWait (timeout + 30s)
        await fn.wait_for(lambda: set(fn.delivered_ids) >= ids, timeout=90, what="every id after restart")
        await wait_consumer_settled(nats_url, stream, "eventbus-test-crash", timeout=20)
        assert await p2.aterminate() == 0
    finally:
        p2.close()
        await fn.stop()
    assert set(fn.delivered_ids) == ids


async def test_nats_server_restart_mid_stream_loses_nothing(fn: FunctionServer, unique_name: str,
                                                            tmp_path: Path) -> None:
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    port = _free_port()
    url = f"nats://127.0.0.1:{port}"
    store = tmp_path / "js"

    def start_server() -> subprocess.Popen[bytes]:
        return subprocess.Popen([binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def wait_up() -> None:
        for _ in range(100):
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                return
            except OSError:
                await asyncio.sleep(0.05)
        raise AssertionError("private nats-server did not start")

    async def slowish(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.005)
        return web.Response(status=204)

    fn.behaviour = slowish
    server = start_server()
    h = Harness(fn, nats=url)
    try:
        await wait_up()
        stream, subj = unique_name.upper(), unique_name
        await make_stream(url, stream, [subj])
        await js_publish(url, [(subj, b"{}", ce_headers(f"a-{i}")) for i in range(600)])
        await h.start(nats_trigger_yaml("rs", subj, stream=stream, ordering="none", concurrency=16,
                                        timeout="1s"))
        await fn.wait_for(lambda: len(fn.delivered_ids) >= 100, what="100 deliveries before the restart")
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        before = len(set(fn.delivered_ids))
        assert before < 600, "the restart should land mid-stream"
        await asyncio.sleep(1.0)
        server = start_server()
        await wait_up()
        await js_publish(url, [(subj, b"{}", ce_headers(f"b-{i}")) for i in range(200)])
        want = {f"a-{i}" for i in range(600)} | {f"b-{i}" for i in range(200)}
        await fn.wait_for(lambda: set(fn.delivered_ids) >= want, timeout=90, what="every id after the restart")
        await wait_consumer_settled(url, stream, "eventbus-test-rs", timeout=45)
        assert set(fn.delivered_ids) == want
    finally:
        await h.runtime.stop()
        server.terminate()
        server.wait(10)


# --- core NATS ----------------------------------------------------------------------------------


async def test_core_queue_group_splits_work_across_runtimes(nats_url: str, fn: FunctionServer,
                                                            unique_name: str) -> None:
    subj = f"{unique_name}.core"
    yaml_text = nats_trigger_yaml("core", subj, ordering="none", concurrency=8)
    a, b = Harness(fn, nats=nats_url), Harness(fn, nats=nats_url)
    try:
        await a.start(yaml_text)
        await b.start(yaml_text)
        nc = await connect(nats_url)
        try:
            for i in range(300):
                await nc.publish(subj, json.dumps({"i": i}).encode(), headers=ce_headers(f"c-{i}"))
            await nc.flush()
        finally:
            await nc.close()
        want = {f"c-{i}" for i in range(300)}
        await fn.wait_for(lambda: set(fn.delivered_ids) >= want, what="every core event")
        name = "eventbus_events_delivered_total"
        for _ in range(100):  # the function answers before the runtimes count
            got_a, got_b = a.metric(name, "test/core"), b.metric(name, "test/core")
            if got_a + got_b >= 300:
                break
            await asyncio.sleep(0.05)
        assert got_a > 0 and got_b > 0, (got_a, got_b)
        assert got_a + got_b == 300  # a queue group: each message to one member
        assert sorted(fn.delivered_ids) == sorted(want)
    finally:
        await a.runtime.stop()
        await b.runtime.stop()


async def test_core_raw_message_wrapped(harness: Harness, unique_name: str) -> None:
    subj = f"{unique_name}.raw"
    await harness.start(nats_trigger_yaml("craw", subj))
    nc = await connect(harness.nats_url)
    try:
        await nc.publish(subj, b"plain text", headers={"Content-Type": "text/plain"})
        await nc.flush()
    finally:
        await nc.close()
    await harness.fn.wait_for(lambda: len(harness.fn.delivered_ids) >= 1, what="one delivery")
    r = harness.fn.received[0]
    assert r.headers["ce-source"] == f"nats://{subj}"
    assert r.headers["ce-type"] == "dev.eventbus.nats.message"
    assert r.headers["content-type"] == "text/plain"
    assert r.body == b"plain text"


# --- poison input: every exit path settles (issue 7) ---------------------------------------------

BATCH = "application/cloudevents-batch+json"


async def test_jetstream_batch_content_type_is_dead_lettered_and_the_next_event_delivered(
        harness: Harness, unique_name: str) -> None:
    stream, subj = unique_name.upper(), unique_name
    dl_stream, dl_subj = f"{stream}-DLQ", f"{unique_name}-dlq"
    await make_stream(harness.nats_url, stream, [subj])
    await make_stream(harness.nats_url, dl_stream, [dl_subj])
    await js_publish(harness.nats_url, [(subj, b"[]", {"Content-Type": BATCH}),
                                        (subj, b'{"n": 2}', ce_headers("ev-2"))])
    await harness.start(nats_trigger_yaml("poison", subj, stream=stream, concurrency=1,
                                          extra_delivery=f"deadLetter: {{nats: {{subject: {dl_subj}}}}}"))
    await harness.fn.wait_for(lambda: harness.fn.delivered_ids == ["ev-2"], what="the event after the poison")
    recs = await read_stream(harness.nats_url, dl_stream, dl_subj, 1)
    h = recs[0].headers
    assert h["ce-type"] == "dev.eventbus.deadletter.undecodable"
    assert BATCH in h["ce-deadletterreason"]
    assert recs[0].data == b"[]"
    await wait_consumer_settled(harness.nats_url, stream, "eventbus-test-poison")
    assert harness.runtime.ready()


async def test_core_nats_undecodable_is_dead_lettered_not_dropped(harness: Harness, unique_name: str) -> None:
    subj = f"{unique_name}.in"
    dl_stream, dl_subj = f"{unique_name.upper()}-DLQ", f"{unique_name}-dlq"
    await make_stream(harness.nats_url, dl_stream, [dl_subj])
    await harness.start(nats_trigger_yaml("cpoison", subj,
                                          extra_delivery=f"deadLetter: {{nats: {{subject: {dl_subj}}}}}"))
    nc = await connect(harness.nats_url)
    try:
        await nc.publish(subj, b"[]", headers={"Content-Type": BATCH})
        await nc.publish(subj, b"{}", headers={"ce-specversion": "1.0", "ce-id": "", "ce-source": "/s",
                                               "ce-type": "t"})
        await nc.publish(subj, b'{"n": 3}', headers=ce_headers("ev-3"))
        await nc.flush()
    finally:
        await nc.close()
    await harness.fn.wait_for(lambda: harness.fn.delivered_ids == ["ev-3"], what="the valid event")
    recs = await read_stream(harness.nats_url, dl_stream, dl_subj, 2)
    reasons = sorted(r.headers["ce-deadletterreason"] for r in recs)
    assert len(recs) == 2 and all(r.headers["ce-type"] == "dev.eventbus.deadletter.undecodable" for r in recs)
    assert any(BATCH in r for r in reasons) and any("'id'" in r for r in reasons)
