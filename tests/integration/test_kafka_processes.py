"""`eventbus run` as a real process: kill -9, SIGTERM and consumer-group rebalances lose nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.integration.support import FunctionServer, RuntimeProcess, create_topic, produce, trigger_yaml

pytestmark = pytest.mark.integration


@pytest.fixture
async def fn() -> AsyncIterator[FunctionServer]:
    async def slowish(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.01)
        return web.Response(status=204)

    server = await FunctionServer(behaviour=slowish).start()
    yield server
    await server.stop()


async def _publish_events(bootstrap: str, topic: str, n: int) -> set[str]:
    ids = set()
    records = []
    for i in range(n):
        eid = f"e-{i}"
        ids.add(eid)
        records.append((f"k{i % 13}".encode(), json.dumps({"i": i}).encode(),
                        [("ce_specversion", b"1.0"), ("ce_id", eid.encode()), ("ce_source", b"/p"),
                         ("ce_type", b"t.crash")]))
    await produce(bootstrap, topic, records)
    return ids


def _spec(tmp_path: Path, name: str, topic: str, ordering: str = "key") -> Path:
    f = tmp_path / f"{name}.yaml"
    f.write_text(trigger_yaml(name, topic, ordering=ordering, concurrency=32))
    return f


async def _wait_proc_ready(fn: FunctionServer, proc: RuntimeProcess, at_least: int, timeout: float = 40) -> None:
    try:
        await fn.wait_for(lambda: len(fn.delivered_ids) >= at_least, timeout=timeout,
                          what=f"{at_least} deliveries")
    except AssertionError:
        raise AssertionError(f"runtime log:\n{proc.log_text()[-4000:]}") from None


async def test_kill9_mid_stream_then_restart_delivers_everything(
    kafka_bootstrap: str, fn: FunctionServer, unique_name: str, tmp_path: Path
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=4)
    ids = await _publish_events(kafka_bootstrap, topic, 1500)
    spec = _spec(tmp_path, "crash", topic)
    p1 = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "rt1.log").start()
    try:
        await _wait_proc_ready(fn, p1, 300)
        p1.kill9()
    finally:
        p1.close()
    delivered_before = len(fn.delivered_ids)
    assert delivered_before < len(ids), "the kill should land mid-stream"
    p2 = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "rt2.log").start()
    try:
        await fn.wait_for(lambda: set(fn.delivered_ids) >= ids, timeout=60, what="every id after restart")
    finally:
        await p2.aterminate()
        p2.close()
    assert set(fn.delivered_ids) == ids


async def test_sigterm_drains_and_commits_no_duplicates(
    kafka_bootstrap: str, fn: FunctionServer, unique_name: str, tmp_path: Path
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=4)
    ids = await _publish_events(kafka_bootstrap, topic, 1000)
    spec = _spec(tmp_path, "term", topic)
    p1 = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "rt1.log").start()
    try:
        await _wait_proc_ready(fn, p1, 200)
        rc = await asyncio.get_running_loop().run_in_executor(None, p1.terminate)
        assert rc == 0, p1.log_text()[-3000:]
    finally:
        p1.close()
    assert len(fn.delivered_ids) < len(ids), "SIGTERM should land mid-stream"
    p2 = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "rt2.log").start()
    try:
        await fn.wait_for(lambda: len(fn.delivered_ids) >= len(ids), timeout=60, what="every id after restart")
        await asyncio.sleep(1.0)  # room for a duplicate to show up
    finally:
        rc2 = await asyncio.get_running_loop().run_in_executor(None, p2.terminate)
        p2.close()
    assert rc2 == 0
    dupes = len(fn.delivered_ids) - len(set(fn.delivered_ids))
    assert dupes == 0, f"{dupes} duplicates after a graceful stop"
    assert set(fn.delivered_ids) == ids


async def test_two_runtimes_rebalance_lose_nothing(
    kafka_bootstrap: str, fn: FunctionServer, unique_name: str, tmp_path: Path
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=6)
    ids = await _publish_events(kafka_bootstrap, topic, 3000)
    spec = _spec(tmp_path, "pair", topic, ordering="partition")
    a = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "a.log").start()
    b = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "b.log")
    try:
        await _wait_proc_ready(fn, a, 300)
        b.start()  # joins the group: partitions move while events are in flight
        await _wait_proc_ready(fn, b, 1200, timeout=60)
        rc = await asyncio.get_running_loop().run_in_executor(None, a.terminate)  # and move back
        assert rc == 0, a.log_text()[-3000:]
        await fn.wait_for(lambda: set(fn.delivered_ids) >= ids, timeout=90, what="every id across rebalances")
    finally:
        for p in (a, b):
            if p.proc is not None and p.proc.poll() is None:
                await p.aterminate()
            p.close()
    assert set(fn.delivered_ids) == ids
