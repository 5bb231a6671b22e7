"""Ordering lanes and flow control per group: one item at a time per lane, lanes in parallel.

An item belongs to a *group* (a Kafka partition, a NATS subject) and to a *lane* inside it (the
partition for `partition` ordering, the partition and key for `key`, none at all for `none`). Each group
has a bounded queue: when it holds `group_limit` queued items, `on_full(group)` is called (the source
pauses that partition alone) and `on_room(group)` once it has drained to half. A fixed pool of
`concurrency` workers runs the items, round robin over the lanes that have work, so `concurrency` bounds
requests in flight (running items), not queued ones, and a hot group never starves a quiet one (a worker
stays on its lane only while no other lane waits).
Workers are long-lived tasks that loop; no task is created per item.

Each group has a `Halt` token, handed to the handler with every item. `revoke` sets it: a running item
finishes the attempt in flight but starts no other (see `triggers.halt`), and `revoke` waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from triggers.halt import Halt

log = logging.getLogger("eventbus.ordering")

T = TypeVar("T")


class _Group:
    __slots__ = ("halt", "idle", "key", "lanes", "paused", "queued", "running")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.halt = Halt()
        self.queued = 0
        self.running = 0
        self.paused = False
        self.lanes: set[Hashable] = set()
        self.idle: asyncio.Event | None = None  # created on demand by `revoke`


class _Lane(Generic[T]):
    __slots__ = ("active", "group", "key", "queue", "running")

    def __init__(self, key: Hashable, group: _Group) -> None:
        self.key = key
        self.group = group
        self.queue: deque[T] = deque()
        self.active = False  # in the ready queue or running: exactly one worker at a time
        self.running = False


class LaneScheduler(Generic[T]):
    """Runs `handler(item, halt)` for submitted items: in order per lane, `concurrency` at a time overall;
    `halt` is the item's group's token (set when the group is revoked)."""

    def __init__(
        self,
        handler: Callable[[T, Halt], Awaitable[None]],
        concurrency: int,
        *,
        group_limit: int,
        on_full: Callable[[Hashable], None] | None = None,
        on_room: Callable[[Hashable], None] | None = None,
    ) -> None:
        self._handler = handler
        self.concurrency = max(1, concurrency)
        self.group_limit = max(1, group_limit)
        self._resume_at = self.group_limit // 2
        self._on_full = on_full
        self._on_room = on_room
        self._groups: dict[Hashable, _Group] = {}
        self._lanes: dict[Hashable, _Lane[T]] = {}
        self._ready: deque[_Lane[T] | tuple[_Group, T]] = deque()
        self._sleepers: deque[asyncio.Future[None]] = deque()
        self._workers: dict[asyncio.Task[None], _Group | None] = {}
        self._outstanding = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._room: asyncio.Event | None = None
        self._room_below = 0
        self._closed = False

    # --- state --------------------------------------------------------------------------------

    @property
    def outstanding(self) -> int:
        """Items queued or running."""
        return self._outstanding

    def queued(self, group: Hashable) -> int:
        g = self._groups.get(group)
        return 0 if g is None else g.queued

    def paused(self, group: Hashable) -> bool:
        g = self._groups.get(group)
        return g is not None and g.paused

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def wait_room(self, limit: int) -> None:
        """Wait until fewer than `limit` items are queued or running."""
        if self._outstanding < limit:
            return
        self._room_below = limit
        self._room = asyncio.Event()
        await self._room.wait()

    # --- submitting ---------------------------------------------------------------------------

    def submit(self, group: Hashable, lane: Hashable | None, item: T) -> None:
        """Queue `item` (never blocks); `lane` None = no ordering."""
        if self._closed:
            raise RuntimeError("scheduler is closed")
        ln = self._lanes.get(lane) if lane is not None else None
        if ln is not None:
            g = ln.group  # a lane lives in one group (a key seen on two NATS subjects stays in the first)
        else:
            found = self._groups.get(group)
            g = found if found is not None else self._groups.setdefault(group, _Group(group))
        if self._outstanding == 0:
            self._idle.clear()  # only on the way out of idle: not a call per item
        g.queued += 1
        self._outstanding += 1
        if g.queued >= self.group_limit and not g.paused:
            g.paused = True
            if self._on_full is not None:
                self._on_full(g.key)
        if lane is None:
            self._ready.append((g, item))
        else:
            if ln is None:
                ln = self._lanes[lane] = _Lane(lane, g)
                g.lanes.add(lane)
            ln.queue.append(item)
            if ln.active:
                return  # its worker takes it after the items before it
            ln.active = True
            self._ready.append(ln)
        self._wake_worker()

    def submit_run(self, group: Hashable, items: list[T]) -> None:
        """`submit(group, group, item)` for each of `items` in order, at once: a run of one group's items whose
        lane is the group (`partition` ordering), as a fetched batch holds them."""
        if self._closed:
            raise RuntimeError("scheduler is closed")
        ln = self._lanes.get(group)
        if ln is not None:
            g = ln.group
        else:
            found = self._groups.get(group)
            g = found if found is not None else self._groups.setdefault(group, _Group(group))
        if self._outstanding == 0:
            self._idle.clear()
        n = len(items)
        g.queued += n
        self._outstanding += n
        if g.queued >= self.group_limit and not g.paused:
            g.paused = True
            if self._on_full is not None:
                self._on_full(g.key)
        if ln is None:
            ln = self._lanes[group] = _Lane(group, g)
            g.lanes.add(group)
        ln.queue.extend(items)
        if ln.active:
            return
        ln.active = True
        self._ready.append(ln)
        self._wake_worker()

    def _wake_worker(self) -> None:
        while self._sleepers:
            fut = self._sleepers.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        if len(self._workers) < self.concurrency:
            self._spawn()

    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._work())
        self._workers[task] = None
        task.add_done_callback(self._worker_done)

    def _worker_done(self, task: asyncio.Task[None]) -> None:
        self._workers.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler worker died", exc_info=task.exception())
        if not self._closed and self._ready and len(self._workers) < self.concurrency:
            self._spawn()

    # --- running ------------------------------------------------------------------------------

    async def _work(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        workers = self._workers
        ready = self._ready
        handler = self._handler
        loop = asyncio.get_running_loop()
        while True:
            if not ready:
                fut: asyncio.Future[None] = loop.create_future()
                self._sleepers.append(fut)
                await fut
                continue
            entry = ready.popleft()
            # An unordered item runs alone; a lane runs its items one after another, and the worker stays on
            # it while no other lane waits (nobody to be fair to), going round robin as soon as one does.
            lane: _Lane[T] | None
            if isinstance(entry, tuple):
                g, item = entry
                lane = queue = None
            else:
                lane = entry
                g = lane.group
                queue = lane.queue
                lane.running = True
                item = queue.popleft()
            g.running += 1
            workers[me] = g
            try:
                while True:
                    g.queued -= 1
                    if g.paused and g.queued <= self._resume_at:
                        g.paused = False
                        if self._on_room is not None:
                            self._on_room(g.key)
                    try:
                        await handler(item, g.halt)
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("item handler failed")  # the driver settles every path; this is a bug
                    finally:
                        self._outstanding -= 1  # `_done(1)` without a call per item: `_wake_waiters` when due
                        if self._outstanding == 0 or self._room is not None:
                            self._wake_waiters()
                    if queue is None or ready or not queue:
                        break
                    item = queue.popleft()
            finally:
                workers[me] = None
                g.running -= 1
                if g.running == 0 and g.idle is not None:
                    g.idle.set()
                if lane is not None:
                    lane.running = False
                    if queue:
                        ready.append(lane)
                    else:
                        lane.active = False
                        if self._lanes.get(lane.key) is lane:
                            del self._lanes[lane.key]
                            g.lanes.discard(lane.key)

    def _done(self, n: int) -> None:
        """`n` items ended (or were dropped)."""
        self._outstanding -= n
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Wake who waits for idle, or for room below a limit, when that has come."""
        if self._outstanding == 0:
            self._idle.set()
        if self._room is not None and self._outstanding < self._room_below:
            self._room.set()
            self._room = None

    # --- revocation and shutdown --------------------------------------------------------------

    def _drop_queued(self, groups: set[Hashable]) -> int:
        """Forget queued (not running) items of `groups`; returns how many."""
        dropped = 0
        keep: deque[_Lane[T] | tuple[_Group, T]] = deque()
        for entry in self._ready:
            if isinstance(entry, tuple):
                if entry[0].key in groups:
                    dropped += 1
                    entry[0].queued -= 1
                    continue
            elif entry.group.key in groups:
                continue  # its queue is dropped below
            keep.append(entry)
        self._ready.clear()  # in place: workers hold a reference to it
        self._ready.extend(keep)
        for key in groups:
            g = self._groups.get(key)
            if g is None:
                continue
            for lk in list(g.lanes):
                ln = self._lanes.get(lk)
                if ln is None:
                    continue
                dropped += len(ln.queue)
                g.queued -= len(ln.queue)
                ln.queue.clear()
                if not ln.running:
                    ln.active = False
                    del self._lanes[lk]
                    g.lanes.discard(lk)
        if dropped:
            self._done(dropped)
        return dropped

    async def revoke(self, groups: Iterable[Hashable], finish_within: float) -> int:
        """Drop queued items of `groups`, halt their running items (the attempt in flight finishes, no
        other starts, a backoff sleep ends now), wait up to `finish_within` seconds for them to end, cancel
        the rest, and forget the groups. Returns how many running items were cancelled.

        When this returns, no item of `groups` runs or will run: the partition may be handed over."""
        keys = set(groups)
        self._drop_queued(keys)
        busy = []
        for k in keys:
            g = self._groups.get(k)
            if g is None:
                continue
            g.halt.set()
            if g.running > 0:
                busy.append(g)
        if busy and finish_within > 0:
            waits = []
            for g in busy:
                g.idle = asyncio.Event()
                waits.append(asyncio.ensure_future(g.idle.wait()))
            _, pending = await asyncio.wait(waits, timeout=finish_within)
            for w in pending:
                w.cancel()
        cancelled = [t for t, g in self._workers.items() if g is not None and g.key in keys]
        for t in cancelled:
            t.cancel()
        if cancelled:
            await asyncio.gather(*cancelled, return_exceptions=True)
        for k in keys:
            gone = self._groups.pop(k, None)
            if gone is not None:
                for lk in gone.lanes:
                    self._lanes.pop(lk, None)
        if self._ready and not self._closed:
            while len(self._workers) < min(self.concurrency, len(self._ready)):
                self._spawn()
        return len(cancelled)

    async def close(self) -> int:
        """Cancel everything: running items are cancelled (unsettled), queued ones dropped. Returns how
        many items were abandoned."""
        self._closed = True
        abandoned = self._outstanding
        self._drop_queued(set(self._groups))
        tasks = list(self._workers)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._groups.clear()
        self._lanes.clear()
        self._ready.clear()
        self._outstanding = 0
        self._idle.set()
        if self._room is not None:
            self._room.set()
        return abandoned
