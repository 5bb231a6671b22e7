"""kill -9 of `eventbus run` at random moments while events flow (Kafka and JetStream): nothing lost, and
no more duplicates than events in flight at the kills.

In flight at a kill = events the killed runtime had delivered but whose offset/ack the broker had not
recorded when it died: Kafka, ids the function answered during that runtime's life at or past the group's
committed offset of their partition (read after the kill); JetStream, the consumer's `num_ack_pending` right
after the kill (it also holds what earlier killed runtimes held until their ack_wait ran out, so it is a
looser bound). Those, and only those, may be delivered again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from aiohttp import web
from aiokafka import AIOKafkaProducer

from tests.chaos.ledger import Ledger, scaled
from tests.chaos.traffic import (
    DeadLetterWatch,
    ce_headers,
    create_topics,
    js_send_ids,
    js_stream,
    kafka_trigger,
    nats_trigger,
    settle_all,
)
from tests.integration.support import FunctionServer, RuntimeProcess, committed

KILLS = scaled(20, 2)
EVENTS = scaled(20_000, 3_000)


async def slowish(request: web.Request, body: bytes, attempt: int) -> web.StreamResponse:
    await asyncio.sleep(0.002)
    return web.Response(status=204)


async def _flow(fn: FunctionServer, kill_once: Callable[[int], Awaitable[None]], spec: Path, tmp_path: Path,
                extra: list[str], bootstrap: str, rng: random.Random) -> None:
    """KILLS times: start a runtime, let it deliver for a random moment, kill -9 it, then `kill_once(start)`
    with the index in `fn.delivered_ids` where that runtime's deliveries begin."""
    for k in range(KILLS):
        before = len(fn.delivered_ids)
        proc = RuntimeProcess(spec, fn.url, bootstrap, tmp_path / f"rt{k}.log", extra).start()
        try:

            def delivering(b: int = before) -> bool:  # this runtime works (or nothing is left to do)
                return len(fn.delivered_ids) > b + 20 or len(set(fn.delivered_ids)) >= EVENTS

            await fn.wait_for(delivering, timeout=60, what=f"deliveries by runtime #{k}")
            await asyncio.sleep(rng.uniform(0.0, 2.0))
            proc.kill9()
        except AssertionError:
            raise AssertionError(f"runtime #{k} log:\n{proc.log_text()[-3000:]}") from None
        finally:
            proc.close()
        await kill_once(before)


async def test_kill9_runtime_kafka(kafka_bootstrap: str, fn: FunctionServer, unique_name: str,
                                   tmp_path: Path) -> None:
    fn.behaviour = slowish
    topic, dlq, partitions = unique_name, f"{unique_name}.dlq", 8
    await create_topics(kafka_bootstrap, [topic], partitions=partitions)
    await create_topics(kafka_bootstrap, [dlq])
    ledger = Ledger(f"kill -9 runtime x{KILLS} (Kafka)")
    ledger.send(f"kk-{i}" for i in range(EVENTS))
    where: dict[str, tuple[int, int]] = {}

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            for start in range(0, EVENTS, 500):
                futs = [(eid, await producer.send(topic, b"{}", key=eid.encode(), headers=ce_headers(eid)))
                        for eid in ledger.sent[start:start + 500]]
                for eid, fut in futs:
                    meta = await fut
                    where[eid] = (meta.partition, meta.offset)
                await asyncio.sleep(0.05)  # events keep flowing while the runtimes die
        finally:
            await producer.stop()

    in_flight: list[int] = []
    group = f"{unique_name}-g"

    async def after_kill(start: int) -> None:
        offsets = await committed(kafka_bootstrap, group, topic, partitions)
        held = {eid for eid in fn.delivered_ids[start:]  # what the killed runtime delivered
                if eid in where and where[eid][1] >= (offsets.get(where[eid][0]) or 0)}
        in_flight.append(len(held))

    spec = tmp_path / "kill.yaml"
    spec.write_text(kafka_trigger("kill", topic, dead_letter=dlq, group=group, concurrency=32, ordering="key"))
    producing = asyncio.create_task(produce())
    async with DeadLetterWatch(kafka_bootstrap, dlq) as watch:
        await _flow(fn, after_kill, spec, tmp_path, [], kafka_bootstrap, random.Random(1))
        await producing
        last = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "last.log").start()
        try:
            await settle_all(fn, ledger, watch, timeout=scaled(600, 90), quiet=2.0)
        finally:
            await last.aterminate()
            last.close()
    row = ledger.record(f"in flight at kills: {in_flight}")
    assert row.lost == 0, ledger.describe()
    assert row.duplicates <= sum(in_flight), ledger.describe() + f"; in flight at kills {in_flight}"


async def test_kill9_runtime_jetstream(kafka_bootstrap: str, nats_url: str, fn: FunctionServer, unique_name: str,
                                       tmp_path: Path) -> None:
    fn.behaviour = slowish
    base = unique_name.replace("-", "_")
    stream, subject, dlq = f"S_{base}", f"{base}.ev", f"{unique_name}.dlq"
    await create_topics(kafka_bootstrap, [dlq])
    await js_stream(nats_url, stream, [f"{base}.>"])
    ledger = Ledger(f"kill -9 runtime x{KILLS} (JetStream)")
    ledger.send(f"jk-{i}" for i in range(EVENTS))

    async def produce() -> None:
        for start in range(0, EVENTS, 500):
            await js_send_ids(nats_url, subject, ledger.sent[start:start + 500])
            await asyncio.sleep(0.05)

    in_flight: list[int] = []
    name = "kill-js"
    durable = f"eventbus-chaos-{name}"

    async def after_kill(start: int) -> None:
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().consumer_info(stream, durable)
            in_flight.append(int(info.num_ack_pending or 0))
        finally:
            await nc.close()

    spec = tmp_path / "kill.yaml"
    # timeout 1s: the server redelivers what a dead runtime held after ack_wait = timeout + 30 s
    spec.write_text(nats_trigger(name, subject, stream=stream, dead_letter=dlq, concurrency=32, timeout="1s"))
    producing = asyncio.create_task(produce())
    async with DeadLetterWatch(kafka_bootstrap, dlq) as watch:
        await _flow(fn, after_kill, spec, tmp_path, ["--nats", nats_url], kafka_bootstrap, random.Random(2))
        await producing
        last = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / "last.log", ["--nats", nats_url]).start()
        try:
            await settle_all(fn, ledger, watch, timeout=scaled(600, 120), quiet=2.0)
        finally:
            await last.aterminate()
            last.close()
    row = ledger.record(f"in flight at kills: {in_flight}")
    assert row.lost == 0, ledger.describe()
    assert row.duplicates <= sum(in_flight), ledger.describe() + f"; in flight at kills {in_flight}"
