"""triggers.cancel: a task that swallows a cancellation (as Python 3.11's asyncio.wait_for does when the
result lands in the same iteration) is cancelled again until it ends."""

from __future__ import annotations

import asyncio

from triggers.cancel import cancel_until_done


async def test_a_task_that_swallows_one_cancel_still_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:
                    swallowed += 1
                    asyncio.current_task().uncancel()  # type: ignore[union-attr]
                    continue  # like wait_for returning a result instead of raising
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    plain = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done() and swallowed == 1  # a single cancel was lost: gather() would wait forever here
    await asyncio.wait_for(cancel_until_done(task, plain), 2)
    assert task.cancelled() and plain.cancelled()


async def test_done_tasks_and_failures_are_fine() -> None:
    async def boom() -> None:
        raise ValueError("x")

    failed = asyncio.create_task(boom())
    await asyncio.sleep(0)
    await cancel_until_done(failed)  # its exception is retrieved, not logged as never retrieved
    assert isinstance(failed.exception(), ValueError)
