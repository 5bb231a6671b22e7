"""Flow control per subject on real JetStream: a hot subject's backlog does not delay quiet subjects."""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from tests.integration.support import FunctionServer
from tests.integration.support import RuntimeHarness as Harness
from tests.integration.test_nats_delivery import js_publish, make_stream, nats_trigger_yaml

HOT = 600


async def test_one_hot_subject_does_not_delay_quiet_ones(nats_url: str, fn: FunctionServer,
                                                         unique_name: str) -> None:
    stream = unique_name.upper()
    await make_stream(nats_url, stream, [f"{unique_name}.>"])
    quiet_latency: list[float] = []
    hot_done = 0

    async def behaviour(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        nonlocal hot_done
        data = json.loads(body)
        if data["s"] == "hot":
            await asyncio.sleep(0.005)  # the hot subject's backlog takes several seconds in order
            hot_done += 1
        else:
            quiet_latency.append(time.time() - data["sent"])
        return web.Response(status=204)

    fn.behaviour = behaviour
    await js_publish(nats_url, [(f"{unique_name}.hot", json.dumps({"s": "hot", "sent": 0}).encode(), None)
                                for _ in range(HOT)])
    harness = Harness(fn, nats=nats_url)
    try:
        await harness.start(nats_trigger_yaml("jflow", f"{unique_name}.>", stream=stream, concurrency=16))
        await fn.wait_for(lambda: hot_done >= 20, what="the hot backlog flowing")
        for _ in range(3):
            await js_publish(nats_url, [(f"{unique_name}.q{q}", json.dumps({"s": f"q{q}", "sent": time.time()})
                                         .encode(), None) for q in range(7)])
            await asyncio.sleep(0.1)
        await fn.wait_for(lambda: len(quiet_latency) >= 21, timeout=30, what="the quiet subjects' messages")
        assert hot_done < HOT, "the hot backlog should still be draining (else the test proves nothing)"
        worst = max(quiet_latency)
        assert worst < 1.5, f"a quiet subject's message waited {worst:.2f}s behind the hot subject"
    finally:
        await harness.runtime.stop()
