"""Cancelling a task for sure.

Python 3.11's `asyncio.wait_for` drops a cancellation that arrives in the same loop iteration as its
inner result (it returns the result instead; fixed in 3.12). nats-py wraps every request in it, so a
task cancelled while a NATS reply lands (a cron lease renewal, say) carries on as if nothing happened,
and whoever waits for it to end waits forever. `cancel_until_done` cancels again until the task ends.
"""

from __future__ import annotations

import asyncio
from typing import Any

RECANCEL_EVERY = 0.1


async def cancel_until_done(*tasks: asyncio.Future[Any]) -> None:
    """Cancel `tasks` and return once every one has ended, cancelling again any that swallowed it."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_EVERY)
    for t in tasks:  # retrieve outcomes so none is reported as "exception never retrieved"
        if not t.cancelled():
            t.exception()
