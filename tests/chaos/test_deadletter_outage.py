"""The dead-letter topic deleted mid-stream, then recreated: while it is gone nothing is committed past the
first event whose dead letter could not be written, and afterwards every failed event is in the topic.

One partition, `ordering: none`, so later events keep being delivered while a failed one waits for its
dead-letter sink: the committed offset must still not pass it. Events flow first; then the topic is deleted
and from then on every 10th event fails for good (400), so every failure happens while the topic is gone
(deleting a topic deletes what it held, which is the operator's doing, not a loss to count).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from tests.chaos.ledger import Ledger, scaled
from tests.chaos.traffic import (
    DeadLetterWatch,
    KafkaSender,
    create_topics,
    delete_topic,
    kafka_trigger,
    settle_all,
)
from tests.integration.support import FunctionServer, RuntimeHarness, committed

OUTAGE_S = 4.0


class Function:
    """Fails every 10th event for good once `failing` is set; remembers which ids it failed. Events from
    `hold_from` on wait until then, so the outage always meets events (a fast runtime would otherwise have
    delivered everything before the topic is gone)."""

    def __init__(self, hold_from: int) -> None:
        self.failing = False
        self.failed: list[str] = []
        self.hold_from = hold_from
        self.gate = asyncio.Event()

    def fail_from_now(self) -> None:
        self.failing = True
        self.gate.set()

    async def __call__(self, request: web.Request, body: bytes, attempt: int) -> web.StreamResponse:
        await asyncio.sleep(0.002)
        eid = request.headers.get("ce-id", "")
        index = int(eid.rsplit("-", 1)[-1])
        if index >= self.hold_from:
            await self.gate.wait()
        if self.failing and index % 10 == 0:
            self.failed.append(eid)
            return web.Response(status=400, text="rejected for good")
        return web.Response(status=204)


async def test_dead_letter_topic_deleted_and_recreated(kafka_bootstrap: str, fn: FunctionServer,
                                                       unique_name: str) -> None:
    n = scaled(10_000, 1_500)
    topic, dlq, group = unique_name, f"{unique_name}.dlq", f"{unique_name}-g"
    await create_topics(kafka_bootstrap, [topic, dlq])
    function = Function(hold_from=n // 5)
    fn.behaviour = function
    ledger = Ledger("dead-letter topic deleted, recreated")
    ledger.send(f"dl-{i}" for i in range(n))
    async with KafkaSender(kafka_bootstrap, topic) as sender:
        await sender.send_ids(ledger.sent)
    offset_of = {eid: i for i, eid in enumerate(ledger.sent)}  # one partition, sent in order

    h = RuntimeHarness(fn, kafka=kafka_bootstrap)
    await h.start(kafka_trigger("dlq-outage", topic, dead_letter=dlq, group=group, ordering="none",
                                concurrency=16))
    commits_during_outage: list[int] = []
    try:
        await fn.wait_for(lambda: len(fn.delivered_ids) >= n // 10, timeout=60, what="first deliveries")
        await delete_topic(kafka_bootstrap, dlq)
        deleted_at = time.monotonic()
        await asyncio.sleep(1.0)  # the deletion has reached the broker's metadata
        function.fail_from_now()
        while time.monotonic() - deleted_at < OUTAGE_S:
            commits_during_outage.append((await committed(kafka_bootstrap, group, topic)).get(0) or 0)
            await asyncio.sleep(0.25)
        await create_topics(kafka_bootstrap, [dlq])
        async with DeadLetterWatch(kafka_bootstrap, dlq) as after:
            await settle_all(fn, ledger, after, timeout=scaled(300, 60), quiet=2.0)
    finally:
        await h.runtime.stop()

    final_commit = (await committed(kafka_bootstrap, group, topic)).get(0)
    failed = set(function.failed)
    first_failed = min((offset_of[e] for e in failed), default=n)
    over = [c for c in commits_during_outage if c > first_failed]
    missing = sorted(failed - set(ledger.dead_lettered), key=lambda e: offset_of[e])
    problems = []
    if not failed:
        problems.append("no event failed during the outage (the scenario did not happen)")
    if over:
        problems.append(f"committed up to offset {max(over)} while the event at offset {first_failed} waited "
                        "for its dead letter")
    if missing:
        problems.append(f"{len(missing)} failed events not in the dead-letter topic, e.g. {missing[:5]}")
    row = ledger.record(("FAIL: " + "; ".join(problems)) if problems else
                        f"{len(failed)} failed in the outage; commits then <= offset {first_failed}")
    assert not problems, problems
    assert row.lost == 0, ledger.describe()
    assert final_commit == n, f"final committed offset {final_commit}, want {n}"
