"""Flow control per partition on real Kafka: a hot partition's backlog is paused alone, quiet ones flow."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from tests.integration.support import FunctionServer, create_topic, produce, trigger_yaml
from tests.integration.support import RuntimeHarness as Harness

HOT = 1500
QUIET_PER_PARTITION = 5


async def test_one_hot_partition_does_not_delay_seven_quiet_ones(kafka_bootstrap: str, fn: FunctionServer,
                                                                 unique_name: str) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=8)
    quiet_latency: list[float] = []
    hot_done = 0

    async def behaviour(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        nonlocal hot_done
        data = json.loads(body)
        if data["p"] == 0:
            await asyncio.sleep(0.005)  # the hot partition's backlog takes ~8 s in order
            hot_done += 1
        else:
            quiet_latency.append(time.time() - data["sent"])
        return web.Response(status=204)

    fn.behaviour = behaviour
    await produce(kafka_bootstrap, topic,
                  [(None, json.dumps({"p": 0, "i": i, "sent": 0}).encode(), []) for i in range(HOT)], partition=0)
    harness = Harness(fn, kafka=kafka_bootstrap)
    try:
        await harness.start(trigger_yaml("flow", topic, ordering="partition", concurrency=16))
        await fn.wait_for(lambda: hot_done >= 50, what="the hot backlog flowing")
        for i in range(QUIET_PER_PARTITION):
            for p in range(1, 8):
                await produce(kafka_bootstrap, topic,
                              [(None, json.dumps({"p": p, "i": i, "sent": time.time()}).encode(), [])], partition=p)
            await asyncio.sleep(0.1)
        want = 7 * QUIET_PER_PARTITION
        await fn.wait_for(lambda: len(quiet_latency) >= want, timeout=30, what="the quiet partitions' events")
        assert hot_done < HOT, "the hot backlog should still be draining (else the test proves nothing)"
        worst = max(quiet_latency)
        assert worst < 1.5, f"a quiet partition's event waited {worst:.2f}s behind the hot partition"
    finally:
        await harness.runtime.stop()
