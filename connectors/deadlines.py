"""Request deadlines kept by one timer per timeout length, not one timer per request.

aiohttp's per-request timeout arms a loop timer and two timer contexts for every POST (about 4% of the
dispatch CPU per event). Requests with the same timeout expire in the order they started, so a FIFO per
timeout length and one loop timer at its head give the same deadlines for a dict insert and pop each.
An expired request's task is cancelled, as `asyncio.timeout` does, and `expired()` tells that
cancellation apart from any other (a revocation, a shutdown) so only ours becomes a timeout.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

Task = asyncio.Task[Any]


class Deadlines:
    """Deadlines of requests in flight, each in its own task (one request at a time per task)."""

    def __init__(self) -> None:
        self._queues: dict[float, dict[Task, float]] = {}
        """timeout -> {task: deadline}, in deadline order (same timeout: started earlier = due earlier)."""
        self._expired: set[Task] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def start(self, task: Task, timeout: float) -> None:
        """`task` starts a request that must end within `timeout` seconds."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = {}
        queue[task] = deadline
        if deadline < self._timer_at:
            self._arm(deadline)

    def end(self, task: Task, timeout: float) -> bool:
        """The request of `task` ended (whichever way) before or after its deadline. Returns `expired(task)`:
        the hot path asks both at once."""
        queue = self._queues.get(timeout)
        if queue is not None:
            queue.pop(task, None)
        return bool(self._expired) and self.expired(task)

    def expired(self, task: Task) -> bool:
        """True once for a task that `Deadlines` cancelled because its request ran past its deadline."""
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        assert self._loop is not None
        self._timer = self._loop.call_at(when, self._fire)
        self._timer_at = when

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        assert self._loop is not None
        now = self._loop.time()
        following = math.inf
        for timeout, queue in list(self._queues.items()):
            while queue:
                task, deadline = next(iter(queue.items()))
                if deadline > now:
                    following = min(following, deadline)
                    break
                del queue[task]
                if not task.done():
                    self._expired.add(task)
                    task.cancel()
            if not queue:
                del self._queues[timeout]  # a length no longer in use costs nothing
        if following < math.inf:
            self._arm(following)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = math.inf
        self._queues.clear()
        self._expired.clear()
        self._loop = None
