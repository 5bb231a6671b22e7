"""Cron leases kept across a restart of the same trigger in one process.

When the controller restarts a cron trigger (its spec changed), the old scheduler stops and releases its
lease, and the new one reads and takes it again: three writes and reads in a row against the lease store,
each queued behind every other trigger's renewals. Here a released lease is really released only after
`delay` seconds; a new scheduler of the same trigger in that window gets the same lock object, still held,
and renews it with one write. The guarantees are the lock's own (every write is a compare-and-swap; the
ledger of claimed ticks travels with the lock). On shutdown (`closing`) and on delete (nobody asks again
within `delay`) the lease is released as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from triggers.leader import CasLock, TickLedger

log = logging.getLogger("eventbus.cron.leader")


class _Kept:
    """A `SchedulerLock` whose `release` goes through the keeper."""

    def __init__(self, keeper: LockKeeper, key: str, inner: CasLock) -> None:
        self._keeper, self._key, self.inner = keeper, key, inner
        self.holder = inner.holder
        self.lease_duration = inner.lease_duration

    async def acquire(self) -> TickLedger | None:
        self._keeper.cancel_release(self._key)
        return await self.inner.acquire()

    async def expires_in(self) -> float:
        return await self.inner.expires_in()

    async def claim(self, tick: datetime) -> None:
        await self.inner.claim(tick)

    async def settle(self, tick: datetime) -> None:
        await self.inner.settle(tick)

    async def release(self) -> None:
        await self._keeper.release(self._key, self.inner)


class LockKeeper:
    """See the module doc. All calls for one key come from one event loop (the cron timer loop)."""

    def __init__(self, delay: float = 2.0) -> None:
        self.delay = delay
        self.closing = False  # set before a shutdown: releases are immediate again
        self._locks: dict[str, tuple[Any, CasLock]] = {}
        self._pending: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def lock(self, key: str, identity: Any, make: Callable[[], CasLock]) -> _Kept:
        """The lock of `key`: the kept one if its `identity` (what it was made from) is unchanged."""
        cached = self._locks.get(key)
        if cached is None or cached[0] != identity:
            cached = (identity, make())
            self._locks[key] = cached
        return _Kept(self, key, cached[1])

    def cancel_release(self, key: str) -> None:
        handle = self._pending.pop(key, None)
        if handle is not None:
            handle.cancel()

    async def release(self, key: str, inner: CasLock) -> None:
        if self.closing:
            self._forget(key, inner)
            await inner.release()
            return
        self.cancel_release(key)
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._pending.pop(key, None)
            self._forget(key, inner)
            task = loop.create_task(self._release_now(inner))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._pending[key] = loop.call_later(self.delay, fire)

    def _forget(self, key: str, inner: CasLock) -> None:
        cached = self._locks.get(key)
        if cached is not None and cached[1] is inner:
            del self._locks[key]

    @staticmethod
    async def _release_now(inner: CasLock) -> None:
        try:
            await inner.release()
        except Exception as exc:
            log.warning("cron lease release failed", extra={"key": inner.key, "error": repr(exc)})
