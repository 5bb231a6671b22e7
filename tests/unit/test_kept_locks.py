"""Cron leases kept across a restart of the same trigger (triggers.kept_locks), on the in-memory store."""

from __future__ import annotations

import asyncio

from triggers.kept_locks import LockKeeper
from triggers.leader import CasLock, MemoryCasStore


async def test_restart_within_the_window_keeps_the_lease_delete_releases_it() -> None:
    store = MemoryCasStore()
    keeper = LockKeeper(delay=0.1)
    made: list[CasLock] = []

    def make() -> CasLock:
        made.append(CasLock(store, "k", holder="me", lease_duration=5.0))
        return made[-1]

    first = keeper.lock("ns/a", ("uid", 5.0), make)
    assert await first.acquire() is not None
    await first.release()  # a restart: not released yet
    second = keeper.lock("ns/a", ("uid", 5.0), make)
    assert second.inner is first.inner and len(made) == 1
    assert await second.acquire() is not None
    await asyncio.sleep(0.2)
    assert second.inner.held  # the deferred release was cancelled by the new acquire
    other = CasLock(store, "k", holder="them", lease_duration=5.0)
    assert await other.acquire() is None
    await second.release()  # a delete: nobody asks again, released after the delay
    await asyncio.sleep(0.2)
    assert await other.acquire() is not None


async def test_changed_identity_makes_a_new_lock_and_closing_releases_at_once() -> None:
    store = MemoryCasStore()
    keeper = LockKeeper(delay=10.0)
    a = keeper.lock("ns/a", ("uid", 5.0), lambda: CasLock(store, "k", holder="me", lease_duration=5.0))
    assert await a.acquire() is not None
    b = keeper.lock("ns/a", ("uid", 9.0), lambda: CasLock(store, "k", holder="me", lease_duration=9.0))
    assert b.inner is not a.inner and b.lease_duration == 9.0
    assert await b.acquire() is not None  # same holder: takes its own lease over at once
    keeper.closing = True
    await b.release()
    other = CasLock(store, "k", holder="them", lease_duration=5.0)
    assert await other.acquire() is not None
