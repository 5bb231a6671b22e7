"""Stopping a group's items between attempts: the token a revocation sets.

Cancelling the client side of an HTTP request does not stop the function, which keeps running it; if the
partition's next owner dispatched meanwhile, the function would run two requests of one partition at once.
So a revocation does not cancel an attempt in flight: it *halts* the group. An item checks its group's
`Halt` before each attempt and sleeps its retry backoff through `Halt.sleep`, which a halt cuts short:
either way it raises `Halted`, and the item is left unsettled (the next owner delivers it again).
One `Halt` per group, not per item; checking it is an attribute read.
"""

from __future__ import annotations

import asyncio


class Halted(Exception):
    """The item's group was halted (revoked): it must not start another attempt; leave it unsettled."""


class Halt:
    """Set once, when the group is revoked; never cleared (a group taken again gets a new one)."""

    __slots__ = ("_sleepers", "halted")

    def __init__(self) -> None:
        self.halted = False
        self._sleepers: set[asyncio.Future[None]] = set()

    def set(self) -> None:
        """Halt: no new attempt starts, sleeping items wake now (and raise `Halted`)."""
        self.halted = True
        for fut in self._sleepers:
            if not fut.done():
                fut.set_result(None)
        self._sleepers.clear()

    def check(self) -> None:
        """Raise `Halted` once halted."""
        if self.halted:
            raise Halted

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, cut short by `set()`; raises `Halted` when halted (before or during)."""
        self.check()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._sleepers.add(fut)
        timer = loop.call_later(seconds, _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            self._sleepers.discard(fut)
        self.check()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
