"""JetStream lag read from the server: the durable consumer's `num_pending + num_ack_pending` (what KEDA's
JetStream scaler reads); before the consumer exists, the stream's message count for the subject filter
(what the consumer will have to read, with `deliverPolicy: all`). The backlog age is the timestamp of the
first pending message (cached per sequence)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext


class JetStreamLagError(RuntimeError):
    """The server did not answer a lag read; the watcher retries."""


@dataclass(frozen=True, slots=True)
class ConsumerQuery:
    stream: str
    durable: str
    subject: str
    deliver_policy: str = "all"


@dataclass(frozen=True, slots=True)
class ConsumerLag:
    """Messages waiting (pending + unacknowledged) and the time the first of them was stored."""

    lag: int
    oldest: datetime | None
    consumer_exists: bool


class JetStreamLagReader:
    """Reads one consumer's lag per call (two requests at most; the first-message time is cached)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._times: dict[tuple[str, int], datetime] = {}
        self.calls = 0

    async def read(self, q: ConsumerQuery, *, ages: bool = True) -> ConsumerLag:
        try:
            return await self._read(q, ages)
        except (TimeoutError, nats.errors.Error) as exc:
            raise JetStreamLagError(f"reading lag of {q.stream}/{q.durable} failed: "
                                    f"{type(exc).__name__}: {exc}") from exc

    async def _read(self, q: ConsumerQuery, ages: bool) -> ConsumerLag:
        try:
            info = await self.js.consumer_info(q.stream, q.durable)
            self.calls += 1
        except nats.js.errors.NotFoundError:
            self.calls += 1
            return await self._before_consumer(q, ages)
        lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        if lag == 0 or not ages:
            return ConsumerLag(lag, None, True)
        floor = info.ack_floor.stream_seq if info.ack_floor is not None and info.ack_floor.stream_seq else 0
        delivered = info.delivered.stream_seq if info.delivered is not None and info.delivered.stream_seq else 0
        first = (floor if info.num_ack_pending else delivered) + 1
        return ConsumerLag(lag, await self._first_time(q, first), True)

    async def _before_consumer(self, q: ConsumerQuery, ages: bool) -> ConsumerLag:
        if q.deliver_policy == "new":
            return ConsumerLag(0, None, False)
        try:
            si = await self.js.stream_info(q.stream, subjects_filter=q.subject)
            self.calls += 1
        except nats.js.errors.NotFoundError:
            return ConsumerLag(0, None, False)  # no stream yet (createStream makes it with the consumer)
        count = sum((si.state.subjects or {}).values())
        if q.deliver_policy == "last":
            count = min(count, 1)
        if count == 0 or not ages:
            return ConsumerLag(count, None, False)
        return ConsumerLag(count, await self._first_time(q, max(1, si.state.first_seq)), False)

    async def _first_time(self, q: ConsumerQuery, seq: int) -> datetime | None:
        key = (q.stream, seq)
        cached = self._times.get(key)
        if cached is not None:
            return cached
        try:
            msg = await self.js.get_msg(q.stream, seq=seq, subject=q.subject, next=True)
            self.calls += 1
        except nats.js.errors.NotFoundError:
            return None
        if msg.time is None:
            return None
        for k in [k for k in self._times if k[0] == q.stream]:
            del self._times[k]
        self._times[key] = msg.time
        return msg.time
