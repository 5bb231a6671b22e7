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


GC_GEN0_THRESHOLD = 10_000
"""Container allocations between two young collections (Python's default is 700). A dispatch allocates a few
dozen short-lived containers that reference counting frees; at 700 the collector ran every ~15 events."""


def tune_gc() -> bool:
    """Keep the cycle collector off the dispatch path: what was imported and configured so far is frozen (no
    collection traverses it again) and young collections run less often. Measured on the Kafka bench: the
    collector's time fell from ~150 to ~40 ms per 20,000 events, ~3% of the dispatch CPU. False (nothing
    changed) when `EVENTBUS_GC=default`."""
    if os.environ.get("EVENTBUS_GC", "tuned") == "default":
        return False
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_GEN0_THRESHOLD), gen1, gen2)
    return True


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run` on the chosen loop, with the collector tuned for a long-running process (`tune_gc`)."""
    tune_gc()
    factory = loop_factory()
    if factory is None:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
