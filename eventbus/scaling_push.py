"""Pushing scaling hints to the platform's autoscaler: a `dev.eventbus.scaling.hint` CloudEvent to the
trigger's `scaling.push` sink (URL, NATS subject or Kafka topic) whenever the hint changes, at most once
per `scaling.pushInterval`, and at once when the trigger turns active. A failed push is retried with
backoff (always with the newest hint) in its own task: pushing never blocks delivery.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from schemas.cloudevent import CloudEvent
from schemas.trigger import Trigger
from triggers.hint_board import HintBoard
from triggers.scaling import Hint
from triggers.sinks import EventSink

log = logging.getLogger("eventbus.scaling")

HINT_TYPE = "dev.eventbus.scaling.hint"
RETRY_FIRST = 0.2
RETRY_MAX = 10.0

SinkFactory = Callable[[], Awaitable[EventSink]]


def function_name(trigger: Trigger) -> str:
    """The function the hint is for: `<namespace>/<name>` (the trigger's namespace by default), or its URL."""
    fn = trigger.spec.function
    if fn.url is not None:
        return fn.url
    return f"{fn.namespace or trigger.metadata.namespace}/{fn.name}"


def hint_event(trigger: Trigger, hint: Hint, observed_at: datetime) -> CloudEvent:
    """The CloudEvent of one hint: data = the `eventbus lag` row plus `function` and `observedAt`."""
    when = observed_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    data: dict[str, Any] = {**hint.row(), "function": function_name(trigger), "observedAt": when}
    attrs = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": f"/eventbus/triggers/{trigger.key}",
             "type": HINT_TYPE, "subject": trigger.key, "time": when, "datacontenttype": "application/json"}
    return CloudEvent(attrs, json.dumps(data, separators=(",", ":")).encode())


class HintPusher:
    """One trigger's push loop (a task started by `start()`, cancelled by `stop()`)."""

    def __init__(self, trigger: Trigger, board: HintBoard, make_sink: SinkFactory) -> None:
        self.trigger = trigger
        self.board = board
        self.make_sink = make_sink
        self.interval = trigger.spec.scaling.push_interval
        self.sent = 0
        self.failures = 0
        self._sink: EventSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Hint] | None = None
        self._last_sent: Hint | None = None
        self._sent_at = -1e18

    def start(self) -> None:
        self._queue = self.board.subscribe(self.trigger.key)
        self._task = asyncio.create_task(self._run(), name=f"scaling-push:{self.trigger.key}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._queue is not None:
            self.board.unsubscribe(self.trigger.key, self._queue)

    def _urgent(self, hint: Hint) -> bool:
        return hint.active and (self._last_sent is None or not self._last_sent.active)

    async def _next(self, hint: Hint | None, until: float) -> Hint | None:
        """The newest hint available by `until` (monotonic), returning early for an urgent one."""
        assert self._queue is not None
        while True:
            while not self._queue.empty():
                hint = self._queue.get_nowait()
            if hint is not None and self._urgent(hint):
                return hint
            left = until - time.monotonic()
            if left <= 0:
                return hint
            try:
                hint = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                return hint

    async def _run(self) -> None:
        assert self._queue is not None
        pending = await self.board.current(self.trigger.key)
        delay = RETRY_FIRST
        while True:
            if pending is None:
                pending = await self._queue.get()
            pending = await self._next(pending, self._sent_at + self.interval)
            if pending is None:
                continue
            if await self._send(pending):
                self._last_sent, self._sent_at, pending = pending, time.monotonic(), None
                delay = RETRY_FIRST
            else:
                pending = await self._next(pending, time.monotonic() + delay)  # newest hint for the retry
                delay = min(delay * 2, RETRY_MAX)

    async def _send(self, hint: Hint) -> bool:
        try:
            if self._sink is None:
                self._sink = await self.make_sink()
            await self._sink.send(hint_event(self.trigger, hint, datetime.now(UTC)))
        except Exception as exc:  # any failure of the receiver: retried with backoff, never fatal
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:  # say it once per streak, not per retry
                log.warning("scaling hint push failed; retrying with backoff",
                            extra={"trigger": self.trigger.key, "failures": self.failures,
                                   "error": f"{type(exc).__name__}: {exc}"})
            return False
        if self.failures:
            log.info("scaling hint push works again", extra={"trigger": self.trigger.key,
                                                             "after_failures": self.failures})
            self.failures = 0
        self.sent += 1
        return True
