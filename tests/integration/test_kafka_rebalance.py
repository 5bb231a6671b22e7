"""Revocation on real Kafka: a partition whose event is mid-retry is never dispatched by two owners at once."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from tests.integration.support import FunctionServer, create_topic, produce, trigger_yaml
from tests.integration.support import RuntimeHarness as Harness


def _event(eid: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    return None, b"{}", [("ce_specversion", b"1.0"), ("ce_id", eid.encode()), ("ce_source", b"/r"),
                         ("ce_type", b"t.retry")]


async def test_revoked_partition_stops_retrying_before_the_new_owner_starts(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=2)
    await produce(kafka_bootstrap, topic, [_event("p0")], partition=0)
    await produce(kafka_bootstrap, topic, [_event("p1")], partition=1)
    calls: dict[str, list[tuple[float, str]]] = {"p0": [], "p1": []}

    def failing(owner: str):  # type: ignore[no-untyped-def]
        async def answer(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
            calls[request.headers["ce-id"]].append((time.monotonic(), owner))
            return web.Response(status=503)  # retried for as long as the budget lasts (it does not end)
        return answer

    fa = await FunctionServer(behaviour=failing("a")).start()
    fb = await FunctionServer(behaviour=failing("b")).start()
    spec = trigger_yaml("reb", topic, group=f"g-{unique_name}").replace("attempts: 3", "attempts: 100000")
    a, b = Harness(fa, kafka=kafka_bootstrap), Harness(fb, kafka=kafka_bootstrap)
    try:
        await a.start(spec)
        await fa.wait_for(lambda: len(calls["p0"]) >= 3 and len(calls["p1"]) >= 3, what="both retrying at A")
        await b.start(spec, wait_ready=False)  # joins the group: one partition moves to B mid-retry
        await fb.wait_for(lambda: len(fb.received) >= 3, timeout=45, what="B retrying the partition it took")
        await asyncio.sleep(0.5)
        for eid, seq in calls.items():
            owners = [o for _, o in seq]
            if "b" not in owners:
                continue
            first_b = owners.index("b")
            assert "a" not in owners[first_b:], (
                f"{eid}: A dispatched after B took the partition: {''.join(owners[first_b:first_b + 20])}")
        assert any("b" in [o for _, o in seq] for seq in calls.values())
    finally:
        await asyncio.gather(a.runtime.stop(), b.runtime.stop())
        await fa.stop()
        await fb.stop()
