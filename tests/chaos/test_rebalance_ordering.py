"""Two runtimes in one consumer group, a slow and retrying function, repeated rebalances (a third runtime joins
and leaves): `ordering: partition` is never violated.

At the function, per partition: never two requests at once, and the sequence number of each request is never
below one already seen (a retry repeats its number). Right before each join and each leave, the next event
of every partition turns slow: ~12 s of failing attempts (longer than the trigger's timeout + 5 s), so the
revocation lands while it is still retrying. Runtimes stop with SIGTERM only (graceful), so there is no
legitimate redelivery from an older offset.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

from aiohttp import web

from tests.chaos.ledger import Ledger, scaled
from tests.chaos.traffic import DeadLetterWatch, KafkaSender, create_topics, kafka_trigger, settle_all
from tests.integration.support import FunctionServer, RuntimeProcess

PARTITIONS = 4
SLOW_ATTEMPTS = 9  # 9 x 0.9 s plus backoff: ~12 s, more than timeout (1 s) + 5 s


class OrderedFunction:
    """Slow, sometimes failing; checks per-partition order and exclusivity of every request it gets."""

    def __init__(self) -> None:
        self.in_flight: dict[int, int] = defaultdict(int)
        self.highest: dict[int, int] = {}
        self.violations: list[str] = []
        self.slow_next: set[int] = set()  # partitions whose next new event turns slow
        self.slow: set[tuple[int, int]] = set()

    def slow_down(self) -> None:
        self.slow_next = set(range(PARTITIONS))

    async def __call__(self, request: web.Request, body: bytes, attempt: int) -> web.StreamResponse:
        p, seq = int(request.headers["ce-part"]), int(request.headers["ce-seq"])
        self.in_flight[p] += 1
        try:
            if self.in_flight[p] > 1:
                self.violations.append(f"partition {p}: seq {seq} dispatched while another request of it runs")
            if seq < self.highest.get(p, -1):
                self.violations.append(f"partition {p}: seq {seq} after seq {self.highest[p]}")
            self.highest[p] = max(seq, self.highest.get(p, -1))
            if attempt == 1 and p in self.slow_next:
                self.slow_next.discard(p)
                self.slow.add((p, seq))
            if (p, seq) in self.slow and attempt <= SLOW_ATTEMPTS:
                await asyncio.sleep(0.9)  # below the 1 s timeout: the runtime sees this 504
                return web.Response(status=504, text="slow")
            if seq % 7 == 3 and attempt <= 2:
                return web.Response(status=503, text="retry me")
            await asyncio.sleep(0.02)
            return web.Response(status=204)
        finally:
            self.in_flight[p] -= 1


async def test_rebalances_never_break_partition_order(kafka_bootstrap: str, fn: FunctionServer, unique_name: str,
                                                      tmp_path: Path) -> None:
    per_partition = scaled(1000, 60)
    rebalances = scaled(10, 1)
    topic, dlq = unique_name, f"{unique_name}.dlq"
    await create_topics(kafka_bootstrap, [topic], partitions=PARTITIONS)
    await create_topics(kafka_bootstrap, [dlq])
    function = OrderedFunction()
    fn.behaviour = function
    ledger = Ledger(f"2 runtimes, slow retrying function, {rebalances}x join+leave (partition order)")
    ids = [(p, s, f"rb-{p}-{s}") for s in range(per_partition) for p in range(PARTITIONS)]
    ledger.send(eid for _, _, eid in ids)
    async with KafkaSender(kafka_bootstrap, topic) as sender:
        await sender.send_ids([eid for _, _, eid in ids], partition=lambda n: ids[n][0],
                              extra=lambda n: {"part": str(ids[n][0]), "seq": str(ids[n][1])})
    spec = tmp_path / "pair.yaml"
    spec.write_text(kafka_trigger("pair", topic, dead_letter=dlq, ordering="partition", concurrency=8,
                                  timeout="1s", retry="{attempts: 12, delay: 300ms, maxDelay: 1s}"))
    procs = [RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / f"{n}.log") for n in ("a", "b")]
    try:
        async with DeadLetterWatch(kafka_bootstrap, dlq) as watch:
            for proc in procs:
                proc.start()
            await fn.wait_for(lambda: len(fn.delivered_ids) >= 20, timeout=60, what="first deliveries")
            for r in range(rebalances):
                function.slow_down()
                third = RuntimeProcess(spec, fn.url, kafka_bootstrap, tmp_path / f"c{r}.log").start()
                try:
                    for _ in range(600):  # joined: partitions move while events retry
                        if "partitions assigned" in third.log_text():
                            break
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(2.0)
                    function.slow_down()
                    await asyncio.sleep(1.0)
                    rc = await third.aterminate(60)  # leaves: they move again
                    assert rc == 0, third.log_text()[-2000:]
                finally:
                    third.close()
                await asyncio.sleep(1.0)
            await settle_all(fn, ledger, watch, timeout=scaled(900, 120), quiet=2.0)
    finally:
        for proc in procs:
            if proc.proc is not None and proc.proc.poll() is None:
                await proc.aterminate(60)
            proc.close()
    violations = function.violations
    row = ledger.record(f"FAIL: {len(violations)} order violations, e.g. {violations[:2]}" if violations
                        else "0 order violations")
    assert row.lost == 0, ledger.describe()
    assert not violations, f"{len(violations)} ordering violations: {violations[:10]}"
