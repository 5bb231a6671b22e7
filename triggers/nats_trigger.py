"""The NATS trigger controller: JetStream (at least once) or core NATS (at most once).

JetStream: a durable pull consumer (explicit acks). Messages are fetched in batches of at most the free
capacity (`delivery.concurrency` minus unsettled messages), decoded, put on ordering lanes and settled:

- delivered (2xx), filtered out, dead-lettered or dropped → `ack` (after the dead-letter write);
- a retryable failure below `delivery.retry.attempts` → `nak(delay=backoff)`; the server redelivers and
  `metadata.num_delivered` is the attempt number, so retries survive a crash and never sleep in-process;
- undecodable input → dead-lettered raw (id `<stream>/<sequence>`) → `ack`.

The consumer's `ack_wait` is `delivery.timeout + 30s` (or `jetstream.ackWait` if larger); messages held
longer (queued on a lane, a slow dead-letter sink) get `in_progress` every third of it. `max_deliver` is
unlimited unless `jetstream.maxDeliver` is set, and then at least `retry.attempts`, so the server never
gives up before the pipeline decides.

Ordering on JetStream: `partition` = one message at a time per subject, `key` = per `partitionkey`
(messages without one fall back to their subject), `none` = parallel. A nak'd message is redelivered
*later*, after messages behind it have been handled: order holds while deliveries succeed, but not across a
retry (the lane is held until the nak is sent, no longer). Several runtimes sharing one durable consumer
split the messages, so per-subject order is only kept within one runtime.

Core NATS: a queue-group subscription (`queueGroup`, default `eventbus-<ns>-<name>`); at most once by
nature, retries happen in-process (`Pipeline.settle`), concurrency bounded the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from schemas.cloudevent import CloudEvent
from schemas.errors import InvalidCloudEvent
from schemas.nats_binding import from_nats, wrap_nats_message
from schemas.trigger import JetStream, NatsSource, Trigger
from triggers.delivery import Pipeline
from triggers.ordering import LaneExecutor

log = logging.getLogger("eventbus.nats")

DEFAULT_EVENT_TYPE = "dev.eventbus.nats.message"
ACK_WAIT_MARGIN = 30.0
LAG_INTERVAL = 2.0
FETCH_IDLE_TIMEOUT = 1.0
"""A lingering fetch for one message while idle; also the longest a stop waits for the fetch loop."""
FETCH_BATCH_TIMEOUT = 0.05
"""A batch fetch after a hit: what is available returns at once; a partial batch waits at most this."""
MAX_BATCH = 512

Connect = Callable[[], Awaitable[Client]]


def default_name(trigger: Trigger) -> str:
    """`eventbus-<namespace>-<name>`: the default durable consumer and queue group."""
    return f"eventbus-{trigger.metadata.namespace}-{trigger.metadata.name}"


def ack_wait_for(timeout: float, js: JetStream) -> float:
    """Longer than one dispatch can take, so the server does not redeliver a message still in flight."""
    return max(timeout + ACK_WAIT_MARGIN, js.ack_wait or 0.0)


def max_deliver_for(attempts: int, js: JetStream) -> int:
    """Unlimited (-1) by default; a configured limit is raised to `attempts` so the pipeline decides."""
    if js.max_deliver is None or js.max_deliver < 0:
        return -1
    return max(js.max_deliver, attempts)


_DELIVER = {"all": DeliverPolicy.ALL, "new": DeliverPolicy.NEW, "last": DeliverPolicy.LAST}


def lane_for(ordering: str, subject: str, event: CloudEvent | None) -> Hashable | None:
    """The ordering lane of a message (None = no ordering)."""
    if ordering == "none":
        return None
    if ordering == "key" and event is not None:
        pk = event.attributes.get("partitionkey")
        if pk is not None:
            return ("k", str(pk))
    return ("s", subject)


class NatsTrigger:
    """Runs one NATS trigger until stopped."""

    def __init__(self, trigger: Trigger, pipeline: Pipeline, *, connect: Connect) -> None:
        src = trigger.spec.source.nats
        assert src is not None
        self.trigger = trigger
        self.source: NatsSource = src
        self.pipeline = pipeline
        self._connect = connect
        self.event_type = trigger.spec.event.type or DEFAULT_EVENT_TYPE
        self._source_override = trigger.spec.event.source
        self.concurrency = trigger.spec.delivery.concurrency
        self.executor = LaneExecutor(self.concurrency)
        self._stopping = asyncio.Event()
        self._metrics = pipeline.metrics
        self.ready = asyncio.Event()
        self.lag = 0
        js = src.jetstream
        self.durable = (js.durable if js is not None and js.durable else None) or default_name(trigger)
        self.queue_group = src.queue_group or default_name(trigger)
        self.ack_wait = ack_wait_for(trigger.spec.delivery.timeout, js) if js is not None else 0.0
        # JetStream bookkeeping: fetched but not yet acked/nak'd messages (for capacity and in_progress)
        self._held: dict[int, tuple[Msg, float]] = {}
        self._room = asyncio.Event()
        self._room.set()

    def stop(self) -> None:
        self._stopping.set()
        self._room.set()  # wake a fetch loop waiting for capacity

    async def run(self, grace: float = 30.0) -> None:
        """Consume until `stop()`; then let in-flight events settle for up to `grace` seconds."""
        nc = await self._connect()
        if self.source.jetstream is not None:
            await self._run_jetstream(nc, self.source.jetstream, grace)
        else:
            await self._run_core(nc, grace)

    def _event_source(self, subject: str) -> str:
        return self._source_override or f"nats://{subject}"

    # --- JetStream ----------------------------------------------------------------------------

    async def _ensure_consumer(self, js: JetStreamContext, spec: JetStream) -> None:
        if spec.create_stream:
            try:
                await js.stream_info(spec.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=spec.stream, subjects=[self.source.subject],
                                                 storage=StorageType.FILE))
                log.info("created stream", extra={"trigger": self.trigger.key, "stream": spec.stream,
                                                  "subject": self.source.subject})
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            deliver_policy=_DELIVER[spec.deliver_policy],
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=max_deliver_for(self.pipeline.max_attempts, spec),
            filter_subject=self.source.subject,
            max_ack_pending=max(1000, 2 * self.concurrency),
        )
        try:
            await js.add_consumer(spec.stream, config)
        except nats.js.errors.BadRequestError as exc:
            # an existing durable whose fixed settings (deliver policy, filter) differ: use it as it is
            try:
                await js.consumer_info(spec.stream, self.durable)
            except nats.js.errors.NotFoundError:
                raise exc from None
            log.warning("existing durable consumer kept with its own settings",
                        extra={"trigger": self.trigger.key, "consumer": self.durable, "error": str(exc)})

    async def _run_jetstream(self, nc: Client, spec: JetStream, grace: float) -> None:
        js = nc.jetstream()
        await self._ensure_consumer(js, spec)
        sub = await js.pull_subscribe_bind(durable=self.durable, stream=spec.stream)
        housekeeping = [asyncio.create_task(self._lag_loop(sub)), asyncio.create_task(self._progress_loop())]
        try:
            self.ready.set()
            await self._fetch_loop(sub, spec.stream)
            try:
                await asyncio.wait_for(self.executor.wait_idle(), grace)
            except TimeoutError:
                log.warning("grace period over; abandoning in-flight events (they will be redelivered)",
                            extra={"trigger": self.trigger.key, "in_flight": self.executor.outstanding})
        finally:
            for t in housekeeping:
                t.cancel()
            await asyncio.gather(*housekeeping, return_exceptions=True)
            leftover = list(self._held.values())  # cancelled jobs unhold themselves: remember them first
            await self.executor.cancel_all()
            await self._release(leftover)
            try:
                await nc.flush(timeout=2)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("final flush of acks failed (those messages will be redelivered)",
                            extra={"trigger": self.trigger.key, "error": repr(exc)})
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _release(self, held: list[tuple[Msg, float]]) -> None:
        """Messages fetched but never settled (stop after grace): nak so another runtime takes them now.
        Those settled meanwhile refuse the nak (already acknowledged)."""
        self._held.clear()
        for msg, _ in held:
            try:
                await msg.nak()
            except nats.errors.Error:
                pass

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription, stream: str) -> None:
        hit = False
        while not self._stopping.is_set():
            await self._room.wait()
            free = self.concurrency - len(self._held)
            if free <= 0:
                self._room.clear()
                continue
            try:
                if hit:
                    msgs = await sub.fetch(min(free, MAX_BATCH), timeout=FETCH_BATCH_TIMEOUT)
                else:
                    msgs = await sub.fetch(1, timeout=FETCH_IDLE_TIMEOUT)
            except (TimeoutError, nats.errors.TimeoutError):
                hit = False
                continue
            except nats.errors.Error as exc:  # disconnected, consumer gone, ...: back off and try again
                hit = False
                log.warning("JetStream fetch failed; retrying", extra={"trigger": self.trigger.key,
                                                                      "error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(0.5)
                continue
            hit = bool(msgs)
            for msg in msgs:
                await self._submit_js(msg, stream)

    async def _submit_js(self, msg: Msg, stream: str) -> None:
        token = id(msg)
        self._held[token] = (msg, time.monotonic())
        if len(self._held) >= self.concurrency:
            self._room.clear()
        md = msg.metadata
        seq = md.sequence.stream
        source = self._event_source(msg.subject)
        event: CloudEvent | None = None
        error: str | None = None
        try:
            event = from_nats(msg.headers, msg.data)
            if event is None:
                event = wrap_nats_message(
                    subject=msg.subject, stream=md.stream or stream, sequence=seq, timestamp=md.timestamp,
                    headers=msg.headers, payload=msg.data, event_type=self.event_type, event_source=source,
                )
        except InvalidCloudEvent as exc:
            error = str(exc)

        async def job() -> None:
            try:
                if event is None:
                    await self.pipeline.settle_undecodable(
                        id=f"{md.stream or stream}/{seq}", source=source, raw=msg.data,
                        content_type=(msg.headers or {}).get("Content-Type"), reason=error or "undecodable",
                    )
                    await self._ack(msg)
                else:
                    await self._settle_js(msg, event, md.num_delivered)
            finally:
                self._unhold(token)

        await self.executor.submit(lane_for(self.source.ordering, msg.subject, event), None, job)

    def _unhold(self, token: int) -> None:
        self._held.pop(token, None)
        if len(self._held) < self.concurrency:
            self._room.set()

    async def _ack(self, msg: Msg) -> None:
        try:
            await msg.ack()  # no reply awaited: a lost ack only means a redelivery (same id)
        except nats.errors.Error as exc:
            log.warning("ack failed; the message will be redelivered",
                        extra={"trigger": self.trigger.key, "error": repr(exc)})

    async def _settle_js(self, msg: Msg, event: CloudEvent, delivery: int) -> None:
        """One delivery of a JetStream message: dispatch once, then ack, dead-letter+ack, or nak."""
        p = self.pipeline
        m = self._metrics
        m.received.inc()
        if not p.matches(event):
            m.filtered.inc()
            await self._ack(msg)
            return
        m.in_flight.inc()
        try:
            result = await p.attempt(event)
            if result.ok:
                m.delivered.inc()
                if p.reply_sink is not None:
                    await p.publish_reply(event, result.response)
                await self._ack(msg)
                return
            if result.final or delivery >= p.max_attempts:
                why = result.reason if result.final else f"retries exhausted: {result.reason}"
                await p.fail(event, why, result.response.status, delivery)
                await self._ack(msg)
                return
            m.retried.inc()
            delay = p.backoff.delay(delivery, result.response.retry_after())
            try:
                await msg.nak(delay=delay)
            except nats.errors.Error as exc:
                log.warning("nak failed; the message will be redelivered after ackWait",
                            extra={"trigger": self.trigger.key, "event_id": event.id, "error": repr(exc)})
        finally:
            m.in_flight.dec()

    async def _progress_loop(self) -> None:
        """Tell the server about messages held longer than a third of ackWait (queued, slow sinks)."""
        every = max(1.0, self.ack_wait / 3)
        while True:
            await asyncio.sleep(min(every, 5.0))
            now = time.monotonic()
            for token, (msg, since) in list(self._held.items()):
                if now - since < every:
                    continue
                try:
                    await msg.in_progress()
                except nats.errors.Error:
                    continue
                if token in self._held:
                    self._held[token] = (msg, now)

    async def _lag_loop(self, sub: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                info = await sub.consumer_info()
                lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                self.lag = lag
                self._metrics.lag.set(lag)
            except (TimeoutError, nats.errors.Error) as exc:
                log.debug("consumer info failed", extra={"trigger": self.trigger.key, "error": repr(exc)})
            await asyncio.sleep(LAG_INTERVAL)

    # --- core NATS ----------------------------------------------------------------------------

    async def _run_core(self, nc: Client, grace: float) -> None:
        sub: Subscription = await nc.subscribe(self.source.subject, queue=self.queue_group, cb=self._on_core)
        drained = False
        try:
            await nc.flush(timeout=5)
            self.ready.set()
            await self._stopping.wait()
            try:
                await asyncio.wait_for(sub.drain(), grace)  # type: ignore[no-untyped-call]  # stop receiving, hand over what arrived
                drained = True
            except (nats.errors.Error, TimeoutError):
                pass
            try:
                await asyncio.wait_for(self.executor.wait_idle(), grace)
            except TimeoutError:
                log.warning("grace period over; abandoning in-flight events (core NATS: they are lost)",
                            extra={"trigger": self.trigger.key, "in_flight": self.executor.outstanding})
        finally:
            await self.executor.cancel_all()
            if not drained:
                try:
                    await sub.unsubscribe()
                except nats.errors.Error:
                    pass

    async def _on_core(self, msg: Msg) -> None:
        source = self._event_source(msg.subject)
        try:
            event = from_nats(msg.headers, msg.data)
        except InvalidCloudEvent as exc:
            reason = str(exc)

            async def undecodable() -> None:
                await self.pipeline.settle_undecodable(
                    id=str(uuid.uuid4()), source=source, raw=msg.data,
                    content_type=(msg.headers or {}).get("Content-Type"), reason=reason,
                )

            await self.executor.submit(None, None, undecodable)
            return
        if event is None:
            event = wrap_nats_message(
                subject=msg.subject, stream=None, sequence=None, timestamp=datetime.now(UTC),
                headers=msg.headers, payload=msg.data, event_type=self.event_type, event_source=source,
            )
        ev = event

        async def job() -> None:
            await self.pipeline.settle(ev)

        await self.executor.submit(lane_for(self.source.ordering, msg.subject, ev), None, job)
