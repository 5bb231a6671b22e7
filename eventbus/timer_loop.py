"""A second event loop, on its own thread, for schedule-driven triggers (cron).

A loop saturated by dispatch work runs its timers late: measured here, a cron tick beside a Kafka trigger
at ~2,900 events/s fired 67 ms late at p99. Ticks get their own loop (own gateway session, own NATS
connection), so only the GIL hand-off stands between the scheduled instant and the first request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from eventbus.runtime import Controller, Runtime, RuntimeConfig
    from schemas.trigger import Trigger
    from triggers.metrics import Metrics

T = TypeVar("T")

log = logging.getLogger("eventbus.timers")

TIMER_NICE = -5
SWITCH_INTERVAL = 0.001
"""GIL switch interval while a timer loop runs: a waking timer thread waits at most this for the GIL."""


class TimerLoop:
    """Runs a private `Runtime` on a daemon thread; the owning runtime forwards timer triggers to it."""

    def __init__(self, config: RuntimeConfig, metrics: Metrics) -> None:
        self._config = dataclasses.replace(config, metrics_port=None, http_port=None, timer_thread=False)
        self._metrics = metrics
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.runtime: Runtime | None = None
        self._thread = threading.Thread(target=self._main, name="eventbus-timers", daemon=True)
        self._old_switch = sys.getswitchinterval()

    def _main(self) -> None:
        from eventbus.runtime import Runtime

        try:  # ask the kernel to prefer this thread when it wakes (needs CAP_SYS_NICE; fine without)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), TIMER_NICE)
        except (OSError, AttributeError):
            pass
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self.runtime = Runtime(self._config, metrics=self._metrics)
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def start(self) -> None:
        sys.setswitchinterval(min(self._old_switch, SWITCH_INTERVAL))
        self._thread.start()
        await asyncio.to_thread(self._started.wait)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the timer loop and await its result from the calling loop."""
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def add(self, trigger: Trigger) -> Controller:
        assert self.runtime is not None
        return await self.call(self.runtime.add(trigger))

    async def remove(self, key: str) -> None:
        assert self.runtime is not None
        await self.call(self.runtime.remove(key))

    def ready(self) -> bool:
        return self.runtime is not None and self.runtime.ready()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop the timer runtime (its own grace applies), then the loop and its thread. After `timeout`
        the thread is left behind (it is a daemon): the process must be able to exit whatever hangs there."""
        if self._loop is None or self.runtime is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self.runtime.stop(), self._loop)
        try:
            done, _ = await asyncio.wait({asyncio.wrap_future(fut)}, timeout=timeout)
            if not done:
                fut.cancel()
                log.warning("timer loop did not stop in time; leaving its thread behind",
                            extra={"timeout_s": timeout})
                return
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            sys.setswitchinterval(self._old_switch)
        await asyncio.to_thread(self._thread.join, 2.0)
