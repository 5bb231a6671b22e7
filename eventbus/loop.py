"""The event loop eventbus runs on: uvloop when it is installed (the `fast` extra), else asyncio's own; and
the cycle collector's settings for the process that runs it.

`EVENTBUS_LOOP=asyncio` forces the standard loop (for comparison, or to rule uvloop out when debugging).
`EVENTBUS_GC=default` keeps Python's collector settings (see `tune_gc`).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor when available and not switched off, else None (asyncio's default)."""
    if os.environ.get("EVENTBUS_LOOP", "auto") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    return "uvloop" if loop_factory() is not None else "asyncio"


def tune_gc() -> bool:
    """Keep the cycle collector's full collections cheap: what was imported and configured before the loop
    starts (most of the process's objects) is frozen, so no collection traverses it again. The thresholds
    stay Python's: raising the young one to 10,000 made the runtime grow by 58 MB over a 1M backlog (bench/
    kafka_dispatch.py --backlog), freezing alone keeps it flat. False (nothing changed) when
    `EVENTBUS_GC=default`."""
    if os.environ.get("EVENTBUS_GC", "tuned") == "default":
        return False
    gc.collect()
    gc.freeze()
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the chosen loop, with the collector set for a long-running process (`tune_gc`)."""
    tune_gc()
    factory = loop_factory()
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
