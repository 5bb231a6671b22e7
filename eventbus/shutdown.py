"""Stopping on SIGTERM/SIGINT within the grace period, whatever the triggers or the function do.

`eventbus run` and `eventbus up` promise to exit within `--grace` plus 2 s of the signal. The loop-side
stop drains what it can within the grace; a watchdog thread ends the process at grace + EXIT_MARGIN if
anything still hangs (a cancellation lost in a client library, a handler that ignores cancellation),
saying how many events were abandoned unsettled (the broker redelivers them). A signal that arrives
before the loop handles signals (during imports or startup) ends the process at once with code 0:
nothing has been taken from a broker yet.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import FrameType
from typing import Any, NoReturn

from triggers.cancel import cancel_until_done

log = logging.getLogger("eventbus.shutdown")

EXIT_MARGIN = 1.5
"""Seconds past the grace period after which the process exits even if stopping has not finished."""
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _exit_now(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def exit_on_early_signal() -> None:
    """SIGTERM/SIGINT end the process with code 0 until `serve_until_signal` takes the signals over."""
    for sig in SIGNALS:
        signal.signal(sig, _exit_now)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # exiting: a broken handler must not stop the exit
            pass
    sys.stdout.flush()
    sys.stderr.flush()


def exit_process(code: int) -> NoReturn:
    """End `eventbus run`/`up` now, once stopped: flush the logs and skip the interpreter's finalization,
    which with many triggers took seconds under load (garbage collection of every object, a timer-loop
    thread left behind) and which no watchdog can bound (threads cannot run once it has begun)."""
    _flush_logs()
    os._exit(code)


class ExitWatchdog:
    """Started at the first signal: notes what is in flight when the grace period ends, and exits the
    process (code 0) at grace + EXIT_MARGIN if it is still alive then: stopping hung, or what follows it
    (the loop's teardown, the interpreter's finalization) is slow. `stopped()` only changes the message."""

    def __init__(self, what: str, grace: float, in_flight: Callable[[], int]) -> None:
        self.what = what
        self.grace = grace
        self.in_flight = in_flight
        self.abandoned: int | None = None  # in flight when the grace period ended (None: not yet ended)
        self.started: float | None = None
        self.exit_code = 0
        self._done = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._watch, name="eventbus-exit-watchdog", daemon=True)

    def arm(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code
        if self.started is None:
            self.started = time.monotonic()
            self._thread.start()

    def disarm(self) -> None:
        self._done.set()

    def stopped(self) -> None:
        self._stopped = True

    def remaining(self) -> float:
        if self.started is None:
            return self.grace + EXIT_MARGIN
        return max(0.0, self.started + self.grace + EXIT_MARGIN - time.monotonic())

    def _watch(self) -> None:
        if self._done.wait(self.grace):
            return
        if not self._stopped:
            self.abandoned = self.in_flight()
        if self._done.wait(EXIT_MARGIN):
            return
        if self._stopped:
            log.debug(f"{self.what}: stopped, but the process outlived the grace period; exiting now")
        else:
            log.error(f"{self.what}: stopping did not finish within the grace period ({self.grace:g}s); "
                      f"exiting with {self.abandoned} in-flight event(s) abandoned unsettled (they will be "
                      "redelivered)")
        _flush_logs()
        os._exit(self.exit_code)


async def serve_until_signal(
    what: str,
    start: Callable[[], Coroutine[Any, Any, None]],
    stop: Callable[[], Awaitable[None]],
    *,
    grace: float,
    in_flight: Callable[[], int],
    abandoned: Callable[[], int] | None = None,
    watch: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run `start()`, wait for SIGTERM/SIGINT (at any moment, startup included), then `stop()`; exit
    within `grace` + EXIT_MARGIN of the signal. An exception from `start()`, or from `watch()` (run once
    started: e.g. an embedded server that died for good), stops everything and is raised (fatal)."""
    loop = asyncio.get_running_loop()
    requested = asyncio.Event()
    watchdog = ExitWatchdog(what, grace, in_flight)

    def on_signal(sig: signal.Signals) -> None:
        if requested.is_set():
            log.warning(f"{what}: already stopping ({sig.name} again); exiting within "
                        f"{watchdog.remaining():.1f}s at the latest")
            return
        log.info(f"{what}: {sig.name} received: stopping", extra={"grace_s": grace})
        requested.set()
        watchdog.arm()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    starting: asyncio.Task[None] = asyncio.create_task(start(), name="eventbus-start")
    waiting = asyncio.create_task(requested.wait(), name="eventbus-signal")
    failure: BaseException | None = None
    try:
        await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info(f"{what}: stopping during startup; triggers not started yet are skipped")
            await cancel_until_done(starting)
        elif starting.exception() is not None:
            failure = starting.exception()
        elif watch is not None:
            watching = asyncio.create_task(watch(), name="eventbus-watch")
            await asyncio.wait({watching, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if watching.done() and not watching.cancelled():
                failure = watching.exception() or RuntimeError(f"{what}: a watched component ended")
            await cancel_until_done(watching)
        else:
            await waiting
    finally:
        if failure is not None:
            watchdog.arm(exit_code=1)  # stopping what did start is bounded too
        await cancel_until_done(waiting)
        if failure is None:
            log.info("stopping: draining in-flight events", extra={"grace_s": grace})
        try:
            await stop()
        finally:
            watchdog.stopped()  # still armed: the loop's teardown and the interpreter's exit are bounded too
    if failure is not None:
        raise failure
    # what the watchdog saw in flight when the grace period ended, or what the triggers say they abandoned
    # (the watchdog thread may wake only after stopping finished: then it samples nothing)
    abandoned_n = max(watchdog.abandoned or 0, abandoned() if abandoned is not None else 0)
    if abandoned_n:
        log.warning(f"{what} stopped: {abandoned_n} in-flight event(s) abandoned unsettled after the "
                    f"{grace:g}s grace period (they will be redelivered)")
    else:
        log.info(f"{what} stopped: every in-flight event settled")
