"""Bounded concurrency with ordering lanes: one event at a time per lane, lanes in parallel.

The lane of an event decides its ordering: the partition (`partition`), the partition and key (`key`),
or none at all (`none`). Capacity counts queued and running events alike, so `submit` blocks the fetch
loop when the trigger holds `concurrency` unsettled events: backpressure, not unbounded buffering.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable

log = logging.getLogger("eventbus.ordering")

Job = Callable[[], Awaitable[None]]


class _Lane:
    __slots__ = ("queue", "task")

    def __init__(self) -> None:
        self.queue: deque[tuple[Hashable, Job]] = deque()
        self.task: asyncio.Task[None] | None = None


class LaneExecutor:
    """Runs jobs with at most `concurrency` outstanding; jobs of one lane run one at a time, in order."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self._lanes: dict[Hashable, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def outstanding(self) -> int:
        return self._outstanding

    async def submit(self, lane: Hashable | None, group: Hashable, job: Job) -> None:
        """Queue `job` on `lane` (None = no ordering), waiting for capacity first.

        `group` tags the job (the partition) so `discard_group` can drop its queued jobs on revocation.
        """
        await self._slots.acquire()
        self._outstanding += 1
        self._idle.clear()
        if lane is None:
            task = asyncio.create_task(self._run_one(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        ln = self._lanes.get(lane)
        if ln is None:
            ln = self._lanes[lane] = _Lane()
        ln.queue.append((group, job))
        if ln.task is None:
            ln.task = asyncio.create_task(self._drain(lane, ln))

    def _release(self) -> None:
        self._outstanding -= 1
        self._slots.release()
        if self._outstanding == 0:
            self._idle.set()

    async def _run_one(self, job: Job) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job failed")
        finally:
            self._release()

    async def _drain(self, key: Hashable, lane: _Lane) -> None:
        try:
            while lane.queue:
                _, job = lane.queue[0]
                try:
                    await job()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("job failed")
                finally:
                    if lane.queue:
                        lane.queue.popleft()
                    self._release()
        finally:
            lane.task = None
            for _ in lane.queue:  # cancelled with queued jobs: give their capacity back
                self._release()
            lane.queue.clear()
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    def discard_group(self, group: Hashable) -> int:
        """Drop queued (not running) jobs of `group`; returns how many were dropped."""
        dropped = 0
        for lane in self._lanes.values():
            if not lane.queue:
                continue
            head = lane.queue[0] if lane.task is not None else None
            keep: deque[tuple[Hashable, Job]] = deque()
            for item in lane.queue:
                if item[0] == group and item is not head:
                    dropped += 1
                    self._release()
                else:
                    keep.append(item)
            lane.queue = keep
        return dropped

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def cancel_all(self) -> None:
        tasks = [*self._tasks, *(ln.task for ln in self._lanes.values() if ln.task is not None)]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
