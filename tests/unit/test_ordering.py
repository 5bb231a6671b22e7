"""Lanes run one job at a time, in order; capacity bounds queued plus running jobs."""

from __future__ import annotations

import asyncio
import random

from triggers.ordering import LaneExecutor


async def test_lane_order_and_parallelism() -> None:
    ex = LaneExecutor(concurrency=8)
    seen: dict[int, list[int]] = {}
    busy: dict[int, bool] = {}
    peak = 0
    active = 0

    def job(lane: int, seq: int):  # type: ignore[no-untyped-def]
        async def run() -> None:
            nonlocal peak, active
            assert not busy.get(lane), "lane ran two jobs at once"
            busy[lane] = True
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(random.random() / 1000)
            seen.setdefault(lane, []).append(seq)
            active -= 1
            busy[lane] = False
        return run

    for seq in range(50):
        for lane in range(4):
            await ex.submit(lane, lane, job(lane, seq))
    await asyncio.wait_for(ex.wait_idle(), 10)
    assert all(seen[lane] == list(range(50)) for lane in range(4))
    assert 1 < peak <= 4


async def test_capacity_blocks_submit() -> None:
    ex = LaneExecutor(concurrency=2)
    gate = asyncio.Event()

    async def blocked() -> None:
        await gate.wait()

    await ex.submit(None, 0, blocked)
    await ex.submit(None, 0, blocked)
    third = asyncio.create_task(ex.submit(None, 0, blocked))
    await asyncio.sleep(0.05)
    assert not third.done(), "a third job must wait for capacity"
    gate.set()
    await asyncio.wait_for(third, 5)
    await asyncio.wait_for(ex.wait_idle(), 5)
    assert ex.outstanding == 0


async def test_discard_group_drops_only_queued_jobs() -> None:
    ex = LaneExecutor(concurrency=10)
    gate = asyncio.Event()
    ran: list[str] = []

    def job(name: str):  # type: ignore[no-untyped-def]
        async def run() -> None:
            ran.append(name)
            await gate.wait()
        return run

    await ex.submit("lane", "p0", job("a"))
    await ex.submit("lane", "p0", job("b"))
    await ex.submit("lane", "p0", job("c"))
    await asyncio.sleep(0.01)
    assert ex.discard_group("p0") == 2
    gate.set()
    await asyncio.wait_for(ex.wait_idle(), 5)
    assert ran == ["a"]
    assert ex.outstanding == 0


async def test_a_failing_job_does_not_stall_the_lane() -> None:
    ex = LaneExecutor(concurrency=4)
    ran: list[int] = []

    async def boom() -> None:
        raise RuntimeError("boom")

    async def ok() -> None:
        ran.append(1)

    await ex.submit("l", 0, boom)
    await ex.submit("l", 0, ok)
    await asyncio.wait_for(ex.wait_idle(), 5)
    assert ran == [1]
