"""Gateway faults: 30% 5xx, 10% timeouts, 5% connection resets; every event delivered or dead-lettered."""

from __future__ import annotations

import asyncio
import random
import socket
import struct

from aiohttp import web

from tests.chaos.ledger import Ledger, scaled
from tests.chaos.traffic import DeadLetterWatch, KafkaSender, create_topics, kafka_trigger, settle_all
from tests.integration.support import FunctionServer, RuntimeHarness

TIMEOUT_S = 0.3  # the trigger's delivery timeout; a "timeout" answer comes after it


def faulty(seed: int) -> object:
    rng = random.Random(seed)

    async def behaviour(request: web.Request, body: bytes, attempt: int) -> web.StreamResponse:
        roll = rng.random()
        if roll < 0.30:
            return web.Response(status=rng.choice([500, 502, 503, 504]), text="injected")
        if roll < 0.40:
            await asyncio.sleep(TIMEOUT_S + 0.2)  # the runtime gave up already
            return web.Response(status=504, text="too late")
        if roll < 0.45:
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            if sock is not None:  # RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return web.Response(status=500, text="reset")  # never reaches the client
        return web.Response(status=204)

    return behaviour


async def test_gateway_faults_every_event_delivered_or_dead_lettered(
    kafka_bootstrap: str, fn: FunctionServer, unique_name: str
) -> None:
    n = scaled(5000, 600)
    topic, dlq = unique_name, f"{unique_name}.dlq"
    await create_topics(kafka_bootstrap, [topic], partitions=4)
    await create_topics(kafka_bootstrap, [dlq])
    fn.behaviour = faulty(7)  # type: ignore[assignment]
    ledger = Ledger("gateway faults (30% 5xx, 10% timeouts, 5% resets)")
    ledger.send(f"gf-{i}" for i in range(n))
    async with KafkaSender(kafka_bootstrap, topic) as sender:
        await sender.send_ids(ledger.sent)
    h = RuntimeHarness(fn, kafka=kafka_bootstrap)
    async with DeadLetterWatch(kafka_bootstrap, dlq) as watch:
        await h.start(kafka_trigger("faults", topic, dead_letter=dlq, concurrency=64,
                                    timeout=f"{int(TIMEOUT_S * 1000)}ms"))
        try:
            await settle_all(fn, ledger, watch, timeout=scaled(600, 150))
        finally:
            await h.runtime.stop()
    row = ledger.record()
    assert row.lost == 0, ledger.describe()
    assert row.dead_lettered > 0, "with 45% failures and 3 attempts some events must be dead-lettered"
