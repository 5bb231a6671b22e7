"""Readiness tells the truth on real Kafka: 503 while draining and while the broker is unreachable; an
outage is one line of ours per backoff step, with the client library's lines counted, not printed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from tests.integration.support import FunctionServer, create_topic, produce, trigger_yaml
from tests.integration.support import RuntimeHarness as Harness


async def test_unreachable_kafka_is_one_line_per_backoff_step(
    kafka_bootstrap: str, fn: FunctionServer, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    harness = Harness(fn, kafka=kafka_bootstrap)
    try:
        await harness.start(trigger_yaml("down", unique_name, bootstrap="127.0.0.1:1"), wait_ready=False)
        await asyncio.sleep(3.6)  # backoff 1 s, 2 s: three attempts
        assert not harness.runtime.ready()
        ours = [r.getMessage() for r in caplog.records if r.name == "eventbus.driver"
                and "cannot reach Kafka at 127.0.0.1:1" in r.getMessage()]
        assert 2 <= len(ours) <= 3, ours
        assert all("client errors suppressed" in m for m in ours)
        first = next(i for i, r in enumerate(caplog.records) if r.name == "eventbus.driver")
        later_client = [r for r in caplog.records[first + 1:] if r.name.startswith("aiokafka")]
        assert later_client == [], f"{len(later_client)} aiokafka lines after the outage was reported"
    finally:
        await harness.runtime.stop()
    # once the outage is over, client records are printed again
    assert logging.getLogger("aiokafka").filters == [] or all(
        f.filter(logging.LogRecord("aiokafka", logging.ERROR, "", 0, "x", None, None))  # type: ignore[union-attr]
        for f in logging.getLogger("aiokafka").filters)


async def test_not_ready_from_the_moment_stop_begins(kafka_bootstrap: str, fn: FunctionServer,
                                                     unique_name: str) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic)
    gate = asyncio.Event()

    async def slow(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await gate.wait()
        return web.Response(status=204)

    fn.behaviour = slow
    await produce(kafka_bootstrap, topic, [(None, b"x", [])])
    harness = Harness(fn, kafka=kafka_bootstrap)
    await harness.start(trigger_yaml("drain", topic))
    assert harness.runtime.ready()
    await fn.wait_for(lambda: len(fn.received) == 1, what="the event in flight")
    stopping = asyncio.create_task(harness.runtime.stop())
    await asyncio.sleep(0.05)
    assert not harness.runtime.ready(), "/readyz must answer 503 while draining"
    assert not stopping.done(), "the in-flight event is still draining"
    gate.set()
    await asyncio.wait_for(stopping, 15)
