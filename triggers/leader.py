"""Leader election for cron triggers, and the durable record of which ticks were fired.

Several runtimes may run the same cron trigger; exactly one of them schedules it. The lock is a small
interface, `SchedulerLock`, so the Kubernetes controller can back it with a `coordination.k8s.io` Lease;
`CasLock` implements it on anything with compare-and-swap (`CasStore`: a JetStream key-value bucket in
`connectors.nats_kv_lock`, or `MemoryCasStore` in one process).

The record kept under the trigger's key holds the lease (holder and expiry, wall-clock seconds) and the
tick ledger: `lastTick`, the newest tick ever claimed (catch-up reads it), and `pending`, ticks claimed
but not yet settled. Every write is a compare-and-swap on the record's revision, so two replicas can
never both claim the same tick: a replica that lost the lease (paused past its expiry, partitioned) finds
its next write rejected and stops. A new leader re-fires the `pending` ticks (at least once, same id).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from schemas.cron import parse_rfc3339, rfc3339

log = logging.getLogger("eventbus.cron.leader")

DEFAULT_LEASE = 10.0


class LeaderError(RuntimeError):
    """Base class of the lock's errors."""


class LostLeadership(LeaderError):
    """A write was refused because another replica holds (or took) the lease."""


class AlreadyClaimed(LeaderError):
    """The tick is not newer than the last claimed tick and is not pending: someone fired it."""


@dataclass(frozen=True, slots=True)
class TickLedger:
    """What the lock record says about a trigger's ticks (UTC instants)."""

    last_tick: datetime | None = None
    pending: tuple[datetime, ...] = ()


class SchedulerLock(Protocol):
    """One trigger's lease and tick ledger, as the cron controller uses them."""

    holder: str
    lease_duration: float

    async def acquire(self) -> TickLedger | None:
        """Take the lease if free or expired, or renew it if ours; the ledger if we hold it, else None."""
        ...

    async def expires_in(self) -> float:
        """Seconds until the current holder's lease expires (0 if free); what a follower waits for."""
        ...

    async def claim(self, tick: datetime) -> None:
        """Record `tick` as fired-but-unsettled, before it is dispatched. Raises LostLeadership, AlreadyClaimed."""
        ...

    async def settle(self, tick: datetime) -> None:
        """Remove `tick` from the pending ticks: its fate is decided (delivered, dead-lettered, skipped)."""
        ...

    async def release(self) -> None:
        """Give the lease up now (graceful stop), so another replica takes over without waiting."""
        ...


class CasStore(Protocol):
    """Compare-and-swap storage of one value per key; `None` from create/update means a conflict."""

    async def get(self, key: str) -> tuple[bytes, int] | None: ...

    async def create(self, key: str, value: bytes) -> int | None: ...

    async def update(self, key: str, value: bytes, revision: int) -> int | None: ...


def default_holder() -> str:
    """`<host>/<pid>/<random>`: unique per process, and names the process (tests kill it by pid)."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"


@dataclass(slots=True)
class _Record:
    holder: str | None = None
    expires: float = 0.0
    last_tick: str | None = None
    pending: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        return json.dumps({"holder": self.holder, "expires": self.expires, "lastTick": self.last_tick,
                           "pending": self.pending}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> _Record:
        try:
            d = json.loads(raw)
            return cls(d.get("holder"), float(d.get("expires", 0.0)), d.get("lastTick"),
                       list(d.get("pending") or []))
        except (ValueError, TypeError, AttributeError):
            log.error("unreadable cron lock record; starting a fresh one", extra={"raw": raw[:200]})
            return cls()

    def ledger(self) -> TickLedger:
        return TickLedger(
            parse_rfc3339(self.last_tick) if self.last_tick else None,
            tuple(sorted(parse_rfc3339(p) for p in self.pending)),
        )


class CasLock:
    """`SchedulerLock` on a `CasStore`: lease with a wall-clock expiry, every write a compare-and-swap."""

    def __init__(self, store: CasStore, key: str, *, holder: str | None = None,
                 lease_duration: float = DEFAULT_LEASE, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.key = key
        self.holder = holder or default_holder()
        self.lease_duration = lease_duration
        self._clock = clock
        self._record: _Record | None = None
        self._revision = 0
        self._mu = asyncio.Lock()  # one write at a time: a renewal racing a claim would fail its own CAS

    @property
    def held(self) -> bool:
        r = self._record
        return r is not None and r.holder == self.holder

    async def _read(self) -> _Record | None:
        got = await self.store.get(self.key)
        if got is None:
            self._record, self._revision = None, 0
            return None
        raw, self._revision = got
        self._record = _Record.decode(raw)
        return self._record

    async def _write(self, rec: _Record) -> bool:
        if self._revision == 0:
            rev = await self.store.create(self.key, rec.encode())
        else:
            rev = await self.store.update(self.key, rec.encode(), self._revision)
        if rev is None:
            return False
        self._record, self._revision = rec, rev
        return True

    async def acquire(self) -> TickLedger | None:
        async with self._mu:
            return await self._acquire()

    async def _acquire(self) -> TickLedger | None:
        now = self._clock()
        for _ in range(3):
            rec = self._record if self.held else await self._read()
            if rec is not None and rec.holder not in (None, self.holder) and rec.expires > now:
                return None
            base = rec or _Record()
            new = _Record(self.holder, now + self.lease_duration, base.last_tick, list(base.pending))
            if await self._write(new):
                if rec is None or rec.holder != self.holder:
                    log.info("cron lease acquired", extra={"key": self.key, "holder": self.holder,
                                                           "previous": rec.holder if rec else None})
                return new.ledger()
            await self._read()  # lost a race (or our cached revision is stale): look again
        return None

    async def expires_in(self) -> float:
        rec = await self._read()
        if rec is None or rec.holder is None:
            return 0.0
        return max(0.0, rec.expires - self._clock())

    async def _modify(self, change: Callable[[_Record], _Record | None]) -> None:
        async with self._mu:
            await self._modify_locked(change)

    async def _modify_locked(self, change: Callable[[_Record], _Record | None]) -> None:
        if not self.held:
            raise LostLeadership(f"{self.key}: not the lease holder")
        assert self._record is not None
        new = change(replace(self._record, pending=list(self._record.pending)))
        if new is None:
            return
        new.expires = self._clock() + self.lease_duration  # every write renews the lease too
        if not await self._write(new):
            await self._read()
            raise LostLeadership(f"{self.key}: lease taken over by {self._record.holder if self._record else None}")

    async def claim(self, tick: datetime) -> None:
        stamp = rfc3339(tick)

        def change(rec: _Record) -> _Record:
            if stamp in rec.pending:
                return rec
            if rec.last_tick is not None and parse_rfc3339(rec.last_tick) >= tick:
                raise AlreadyClaimed(f"{self.key}: tick {stamp} is not after the last claimed {rec.last_tick}")
            rec.pending.append(stamp)
            rec.last_tick = stamp
            return rec

        await self._modify(change)

    async def settle(self, tick: datetime) -> None:
        stamp = rfc3339(tick)

        def change(rec: _Record) -> _Record | None:
            if stamp not in rec.pending:
                return None
            rec.pending.remove(stamp)
            return rec

        await self._modify(change)

    async def release(self) -> None:
        async with self._mu:
            await self._release()

    async def _release(self) -> None:
        if not self.held:
            return
        assert self._record is not None
        rec = replace(self._record, holder=None, expires=0.0, pending=list(self._record.pending))
        if await self._write(rec):
            log.info("cron lease released", extra={"key": self.key, "holder": self.holder})


class MemoryCasStore:
    """A `CasStore` in this process: for tests, and for runtimes without NATS (one replica only)."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, int]] = {}
        self._seq = 0

    async def get(self, key: str) -> tuple[bytes, int] | None:
        return self._data.get(key)

    async def create(self, key: str, value: bytes) -> int | None:
        if key in self._data:
            return None
        self._seq += 1
        self._data[key] = (value, self._seq)
        return self._seq

    async def update(self, key: str, value: bytes, revision: int) -> int | None:
        cur = self._data.get(key)
        if cur is None or cur[1] != revision:
            return None
        self._seq += 1
        self._data[key] = (value, self._seq)
        return self._seq


_LOCAL = MemoryCasStore()


def local_lock(key: str, *, lease_duration: float = DEFAULT_LEASE) -> CasLock:
    """A lock shared only within this process: replicas elsewhere would fire the same ticks too."""
    return CasLock(_LOCAL, key, lease_duration=lease_duration)
