"""`Deadlines.end` tells the hot path, in the same call, whether the request's deadline cancelled it."""

from __future__ import annotations

import asyncio

from connectors.deadlines import Deadlines


async def test_end_reports_an_expired_deadline_once_and_an_unexpired_one_never() -> None:
    deadlines = Deadlines()

    async def request(seconds: float) -> tuple[bool, bool, bool]:
        task = asyncio.current_task()
        assert task is not None
        deadlines.start(task, 0.05)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            task.uncancel()
            return True, deadlines.end(task, 0.05), deadlines.end(task, 0.05)
        return False, deadlines.end(task, 0.05), deadlines.end(task, 0.05)

    slow, fast = await asyncio.gather(request(5), request(0))
    assert slow == (True, True, False)  # cancelled by its deadline: reported by the first `end` only
    assert fast == (False, False, False)
    assert len(deadlines) == 0
    deadlines.close()
