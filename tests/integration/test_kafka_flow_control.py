"""Flow control per partition on real Kafka: a hot partition's backlog is paused alone, quiet ones flow."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web
from aiokafka import TopicPartition

from tests.integration.support import FunctionServer, create_topic, produce, trigger_yaml
from tests.integration.support import RuntimeHarness as Harness
from triggers.driver import MAX_BATCH
from triggers.kafka_trigger import KafkaTrigger

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


async def test_a_full_partition_is_paused_at_the_consumer_and_resumes_without_loss(
        kafka_bootstrap: str, fn: FunctionServer, unique_name: str) -> None:
    """Its queue stays bounded while it is paused, the consumer itself reports it paused, and after every
    pause and resume each record arrives exactly once and in order (no buffered record skipped or repeated)."""
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=2)
    total = 2000
    seen: list[int] = []

    async def behaviour(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await asyncio.sleep(0.001)
        seen.append(json.loads(body)["i"])
        return web.Response(status=204)

    fn.behaviour = behaviour
    await produce(kafka_bootstrap, topic, [(None, json.dumps({"i": i}).encode(), []) for i in range(total)],
                  partition=0)
    harness = Harness(fn, kafka=kafka_bootstrap)
    try:
        await harness.start(trigger_yaml("paused", topic, ordering="partition", concurrency=4))
        controller = harness.runtime._running["test/paused"].controller
        assert isinstance(controller, KafkaTrigger), controller
        tp = TopicPartition(topic, 0)
        paused_at_consumer = False
        most_queued = 0
        deadline = time.monotonic() + 60
        while len(seen) < total and time.monotonic() < deadline:
            sched = controller._sched
            if sched is not None:
                most_queued = max(most_queued, sched.queued(tp))
            consumer = controller.adapter._consumer
            if consumer is not None and tp in consumer.paused():
                paused_at_consumer = True
                assert tp in controller.adapter.paused()
            await asyncio.sleep(0.005)
        assert seen == list(range(total)), "every record once and in order across pauses"
        assert paused_at_consumer, "the backlog never paused its partition at the consumer"
        bound = controller.group_limit + MAX_BATCH  # a fetched batch overfills a group by one batch at most
        assert most_queued <= bound, f"{most_queued} queued for one partition (bound {bound})"
    finally:
        await harness.runtime.stop()
