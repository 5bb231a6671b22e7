"""Lanes run one item at a time, in order; `concurrency` bounds running items; a full group is paused alone."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable

from triggers.halt import Halt
from triggers.ordering import LaneScheduler


async def test_lane_order_and_parallelism() -> None:
    seen: dict[int, list[int]] = {}
    busy: dict[int, bool] = {}
    peak = 0
    active = 0

    async def run(item: tuple[int, int], _halt: Halt) -> None:
        nonlocal peak, active
        lane, seq = item
        assert not busy.get(lane), "lane ran two items at once"
        busy[lane] = True
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(random.random() / 1000)
        seen.setdefault(lane, []).append(seq)
        active -= 1
        busy[lane] = False

    sched: LaneScheduler[tuple[int, int]] = LaneScheduler(run, 8, group_limit=1000)
    for seq in range(50):
        for lane in range(4):
            sched.submit(lane, lane, (lane, seq))
    await asyncio.wait_for(sched.wait_idle(), 10)
    assert all(seen[lane] == list(range(50)) for lane in range(4))
    assert 1 < peak <= 4
    await sched.close()


async def test_concurrency_bounds_running_items_not_queued_ones() -> None:
    gate = asyncio.Event()
    running = 0
    peak = 0

    async def run(_: int, _halt: Halt) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1

    sched: LaneScheduler[int] = LaneScheduler(run, 3, group_limit=1000)
    for i in range(20):
        sched.submit("g", None, i)  # submit never blocks
    await asyncio.sleep(0.02)
    assert running == 3 and sched.outstanding == 20
    gate.set()
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert peak == 3 and sched.outstanding == 0
    await sched.close()


async def test_full_group_is_paused_alone_and_resumed_at_half() -> None:
    gate = asyncio.Event()
    events: list[tuple[str, Hashable]] = []

    async def run(_: int, _halt: Halt) -> None:
        await gate.wait()

    sched: LaneScheduler[int] = LaneScheduler(run, 4, group_limit=4, on_full=lambda g: events.append(("pause", g)),
                                              on_room=lambda g: events.append(("resume", g)))
    for i in range(5):  # one running, four queued: full
        sched.submit("hot", "hot", i)
    sched.submit("quiet", "quiet", 0)
    await asyncio.sleep(0.01)
    assert events == [("pause", "hot")]
    assert sched.paused("hot") and not sched.paused("quiet")
    gate.set()
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert events == [("pause", "hot"), ("resume", "hot")]
    await sched.close()


async def test_hot_group_does_not_starve_a_quiet_one() -> None:
    done: list[str] = []

    async def run(item: str, _halt: Halt) -> None:
        await asyncio.sleep(0.001)
        done.append(item)

    sched: LaneScheduler[str] = LaneScheduler(run, 2, group_limit=10_000)
    for i in range(200):
        sched.submit("hot", "hot", f"h{i}")
    sched.submit("quiet", "quiet", "q")
    await asyncio.wait_for(sched.wait_idle(), 10)
    assert done.index("q") < 5, "the quiet lane waited behind the hot one"
    await sched.close()


async def test_revoke_drops_queued_and_cancels_what_runs_too_long() -> None:
    ran: list[str] = []
    cancelled: list[str] = []

    async def run(item: str, _halt: Halt) -> None:
        ran.append(item)
        try:
            await asyncio.sleep(3600 if item.startswith("p0") else 0.001)
        except asyncio.CancelledError:
            cancelled.append(item)
            raise

    sched: LaneScheduler[str] = LaneScheduler(run, 4, group_limit=100)
    for i in range(3):
        sched.submit("p0", "p0", f"p0-{i}")
        sched.submit("p1", "p1", f"p1-{i}")
    await asyncio.sleep(0.01)
    n = await asyncio.wait_for(sched.revoke(["p0"], finish_within=0.05), 5)
    assert n == 1 and cancelled == ["p0-0"]
    assert sched.queued("p0") == 0
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert [r for r in ran if r.startswith("p0")] == ["p0-0"]
    assert [r for r in ran if r.startswith("p1")] == ["p1-0", "p1-1", "p1-2"]
    # the scheduler keeps working for new items (the partition assigned again)
    sched.submit("p0", "p0", "p0-again")
    await asyncio.sleep(0.01)
    assert ran[-1] == "p0-again"
    await sched.close()


async def test_a_failing_item_does_not_stall_the_lane() -> None:
    ran: list[int] = []

    async def run(item: int, _halt: Halt) -> None:
        if item == 0:
            raise RuntimeError("boom")
        ran.append(item)

    sched: LaneScheduler[int] = LaneScheduler(run, 4, group_limit=10)
    sched.submit("g", "l", 0)
    sched.submit("g", "l", 1)
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert ran == [1]
    await sched.close()


async def test_a_lane_seen_in_two_groups_keeps_its_accounts_straight() -> None:
    order: list[int] = []

    async def run(item: int, _halt: Halt) -> None:
        await asyncio.sleep(0.001)
        order.append(item)

    sched: LaneScheduler[int] = LaneScheduler(run, 4, group_limit=100)
    for i in range(10):  # JetStream `key` ordering: one key lane, messages on two subjects
        sched.submit("subject.a" if i % 2 else "subject.b", "key-7", i)
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert order == list(range(10))
    assert sched.queued("subject.a") == 0 and sched.queued("subject.b") == 0 and sched.outstanding == 0
    await sched.close()


async def test_waiting_for_idle_after_a_drain_waits_for_the_new_items() -> None:
    """`idle` is cleared when the first item arrives after a drain (not on every submit): a waiter must not
    see the old drain."""
    gate = asyncio.Event()
    done: list[int] = []

    async def run(item: int, _halt: Halt) -> None:
        await gate.wait()
        done.append(item)

    sched: LaneScheduler[int] = LaneScheduler(run, 2, group_limit=10)
    gate.set()
    sched.submit("g", "a", 1)
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert done == [1]
    gate.clear()
    sched.submit("g", "a", 2)
    sched.submit("g", None, 3)
    waiter = asyncio.ensure_future(sched.wait_idle())
    await asyncio.sleep(0.05)
    assert not waiter.done() and sched.outstanding == 2
    gate.set()
    await asyncio.wait_for(waiter, 5)
    assert sorted(done) == [1, 2, 3]
    await sched.close()


async def test_a_run_queued_at_once_is_a_run_of_submits() -> None:
    """`submit_run` (a fetched batch's records of one partition) keeps the order with single submits around it,
    and pauses the group once when the run fills it, resumed at half."""
    gate = asyncio.Event()
    done: list[int] = []
    events: list[tuple[str, Hashable]] = []

    async def run(item: int, _halt: Halt) -> None:
        await gate.wait()
        done.append(item)

    sched: LaneScheduler[int] = LaneScheduler(run, 4, group_limit=8, on_full=lambda g: events.append(("pause", g)),
                                              on_room=lambda g: events.append(("resume", g)))
    sched.submit("p0", "p0", 0)
    sched.submit_run("p0", [1, 2, 3])
    assert events == [] and sched.queued("p0") == 4 and sched.outstanding == 4
    sched.submit_run("p0", list(range(4, 20)))  # overfills the group by a batch: paused once
    sched.submit("p0", "p0", 20)
    assert events == [("pause", "p0")] and sched.outstanding == 21
    gate.set()
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert done == list(range(21))
    assert events == [("pause", "p0"), ("resume", "p0")]
    await sched.close()


async def test_with_more_lanes_than_workers_the_lanes_take_turns() -> None:
    """A worker stays on its lane only while no other lane waits: one worker, two busy lanes, turns."""
    done: list[str] = []

    async def run(item: str, _halt: Halt) -> None:
        await asyncio.sleep(0)
        done.append(item)

    sched: LaneScheduler[str] = LaneScheduler(run, 1, group_limit=100)
    sched.submit_run("a", [f"a{i}" for i in range(5)])
    sched.submit_run("b", [f"b{i}" for i in range(5)])
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert done == [x for i in range(5) for x in (f"a{i}", f"b{i}")]
    await sched.close()


async def test_alone_a_lane_keeps_its_worker_and_its_order() -> None:
    """No other lane waits: the worker runs the lane's items one after another, new ones included."""
    done: list[int] = []
    sched: LaneScheduler[int]

    async def run(item: int, _halt: Halt) -> None:
        await asyncio.sleep(0)
        if item < 5:
            sched.submit("p", "p", item + 10)  # arrives while the lane runs
        done.append(item)

    sched = LaneScheduler(run, 4, group_limit=100)
    sched.submit_run("p", list(range(5)))
    await asyncio.wait_for(sched.wait_idle(), 5)
    assert done == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]
    await sched.close()
