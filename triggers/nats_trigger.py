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
nature, retries happen in-process (`Pipeline.settle`), concurrency bounded the same way; undecodable
input is dead-lettered like everywhere else.

Both are adapters of the one source driver (`triggers.driver`): groups are subjects, lanes subjects or keys.
Neither can pause a subject at the server, so the driver bounds what they hold in all instead: JetStream up
to the consumer's `max_ack_pending` (a hot subject's queue does not keep quiet subjects from being
fetched), core NATS twice the concurrency.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from datetime import UTC, datetime

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from connectors.nats_client import NatsUnreachable
from schemas.cloudevent import CloudEvent
from schemas.nats_binding import from_nats, wrap_nats_message
from schemas.trigger import JetStream, NatsSource, Trigger
from triggers.delivery import Pipeline
from triggers.driver import SourceDriver
from triggers.metrics import TriggerMetrics
from triggers.source import RawInput, Revoke, Source, SourceUnreachable

log = logging.getLogger("eventbus.nats")

DEFAULT_EVENT_TYPE = "dev.eventbus.nats.message"
ACK_WAIT_MARGIN = 30.0
LAG_INTERVAL = 2.0
FETCH_IDLE_TIMEOUT = 1.0
"""A lingering fetch for one message while idle; also the longest a stop waits for the fetch loop."""
FETCH_BATCH_TIMEOUT = 0.05
"""A batch fetch after a hit: what is available returns at once; a partial batch waits at most this."""
MAX_BATCH = 512
DRAIN_INTAKE = 5.0

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


class _NatsBase:
    """What the JetStream and core NATS adapters share: connection, decoding, lanes."""

    redelivers = False
    pauses_groups = False

    def __init__(self, trigger: Trigger, metrics: TriggerMetrics, connect: Connect) -> None:
        src = trigger.spec.source.nats
        assert src is not None
        self.trigger = trigger
        self.trigger_key = trigger.key
        self.source: NatsSource = src
        self.ordering = src.ordering
        self._connect = connect
        self._metrics = metrics
        self.event_type = trigger.spec.event.type or DEFAULT_EVENT_TYPE
        self._source_override = trigger.spec.event.source
        self.broker = f"NATS at {', '.join(src.servers) or 'the runtime default'}"
        self._nc: Client | None = None
        self.lag = 0

    async def _client(self) -> Client:
        try:
            nc = await self._connect()
        except NatsUnreachable as exc:
            raise SourceUnreachable(str(exc)) from exc
        self._nc = nc
        return nc

    async def probe(self) -> None:
        nc = self._nc
        if nc is not None and not nc.is_connected:
            raise SourceUnreachable(f"cannot reach {self.broker}: disconnected, reconnecting")

    def _event_source(self, subject: str) -> str:
        return self._source_override or f"nats://{subject}"

    def current(self) -> bool:
        return True

    def group(self, msg: Msg) -> Hashable:
        return msg.subject

    def lane(self, msg: Msg, event: CloudEvent | None) -> Hashable | None:
        return lane_for(self.ordering, msg.subject, event)

    def key(self, msg: Msg) -> bytes | None:
        return None

    def pause(self, group: Hashable) -> None:
        pass

    def resume(self, group: Hashable) -> None:
        pass


class JetStreamAdapter(_NatsBase):
    """`Source[Msg]` for a durable JetStream pull consumer: ack after settling, nak(delay) to retry."""

    redelivers = True

    def __init__(self, trigger: Trigger, metrics: TriggerMetrics, connect: Connect, spec: JetStream,
                 max_attempts: int) -> None:
        super().__init__(trigger, metrics, connect)
        self.spec = spec
        self.max_attempts = max_attempts
        self.concurrency = trigger.spec.delivery.concurrency
        self.durable = spec.durable or default_name(trigger)
        self.ack_wait = ack_wait_for(trigger.spec.delivery.timeout, spec)
        self.max_ack_pending = max(1000, 2 * self.concurrency)
        self._sub: JetStreamContext.PullSubscription | None = None
        # fetched but not yet acked/nak'd messages (for in_progress, and to release them at close)
        self._held: dict[int, tuple[Msg, float]] = {}
        self._hit = False
        self._fetch_errors = 0

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        spec = self.spec
        if spec.create_stream:
            try:
                await js.stream_info(spec.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=spec.stream, subjects=[self.source.subject],
                                                 storage=StorageType.FILE))
                log.info("created stream", extra={"trigger": self.trigger_key, "stream": spec.stream,
                                                  "subject": self.source.subject})
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            deliver_policy=_DELIVER[spec.deliver_policy],
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=max_deliver_for(self.max_attempts, spec),
            filter_subject=self.source.subject,
            max_ack_pending=self.max_ack_pending,
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
                        extra={"trigger": self.trigger_key, "consumer": self.durable, "error": str(exc)})

    async def open(self, revoke: Revoke) -> None:
        self._held.clear()
        self._hit = False
        nc = await self._client()
        js = nc.jetstream()
        try:
            await self._ensure_consumer(js)
            self._sub = await js.pull_subscribe_bind(durable=self.durable, stream=self.spec.stream)
        except (TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoServersError) as exc:
            raise SourceUnreachable(f"cannot reach {self.broker}: {type(exc).__name__}: {exc}") from exc

    async def fetch(self, limit: int) -> Sequence[Msg]:
        sub = self._sub
        assert sub is not None
        try:
            if self._hit:
                msgs = await sub.fetch(min(limit, MAX_BATCH), timeout=FETCH_BATCH_TIMEOUT)
            else:
                msgs = await sub.fetch(1, timeout=FETCH_IDLE_TIMEOUT)
        except (TimeoutError, nats.errors.TimeoutError):
            self._hit = False
            return ()
        except nats.errors.Error as exc:  # disconnected, consumer gone, ...: back off and try again
            self._hit = False
            self._fetch_errors += 1
            n = self._fetch_errors
            if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... failure in a row: a line per backoff step
                log.warning("JetStream fetch failed; retrying", extra={
                    "trigger": self.trigger_key, "error": f"{type(exc).__name__}: {exc}", "failures": n})
            await asyncio.sleep(min(0.5 * n, 5.0))
            return ()
        self._fetch_errors = 0
        self._hit = bool(msgs)
        now = time.monotonic()
        for msg in msgs:
            self._held[id(msg)] = (msg, now)
        return msgs

    def decode(self, msg: Msg) -> CloudEvent:
        event = from_nats(msg.headers, msg.data)
        if event is None:
            md = msg.metadata
            event = wrap_nats_message(
                subject=msg.subject, stream=md.stream or self.spec.stream, sequence=md.sequence.stream,
                timestamp=md.timestamp, headers=msg.headers, payload=msg.data, event_type=self.event_type,
                event_source=self._event_source(msg.subject),
            )
        return event

    def raw(self, msg: Msg) -> RawInput:
        md = msg.metadata
        return RawInput(id=f"{md.stream or self.spec.stream}/{md.sequence.stream}",
                        source=self._event_source(msg.subject), data=msg.data,
                        content_type=(msg.headers or {}).get("Content-Type"))

    def attempt(self, msg: Msg) -> int:
        return int(msg.metadata.num_delivered or 1)

    async def ack(self, msg: Msg) -> None:
        self._held.pop(id(msg), None)
        try:
            await msg.ack()  # no reply awaited: a lost ack only means a redelivery (same id)
        except nats.errors.Error as exc:
            log.warning("ack failed; the message will be redelivered",
                        extra={"trigger": self.trigger_key, "error": repr(exc)})

    async def nak(self, msg: Msg, delay: float) -> None:
        self._held.pop(id(msg), None)
        try:
            await msg.nak(delay=delay)
        except nats.errors.Error as exc:
            log.warning("nak failed; the message will be redelivered after ackWait",
                        extra={"trigger": self.trigger_key, "error": repr(exc)})

    async def housekeeping(self) -> None:
        await asyncio.gather(self._lag_loop(), self._progress_loop())

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

    async def _lag_loop(self) -> None:
        while True:
            sub = self._sub
            if sub is not None:
                try:
                    info = await sub.consumer_info()
                    lag = int(info.num_pending or 0) + int(info.num_ack_pending or 0)
                    self.lag = lag
                    self._metrics.lag.set(lag)
                except (TimeoutError, nats.errors.Error) as exc:
                    log.debug("consumer info failed", extra={"trigger": self.trigger_key, "error": repr(exc)})
            await asyncio.sleep(LAG_INTERVAL)

    async def stop_intake(self) -> Sequence[Msg]:
        return ()

    async def close(self) -> None:
        """Messages fetched but never settled (stop after grace, a failure): nak so another runtime takes
        them now. Those settled meanwhile refuse the nak (already acknowledged)."""
        held = list(self._held.values())
        self._held.clear()
        for msg, _ in held:
            try:
                await msg.nak()
            except nats.errors.Error:
                pass
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                await nc.flush(timeout=2)
            except (TimeoutError, nats.errors.Error) as exc:
                log.warning("final flush of acks failed (those messages will be redelivered)",
                            extra={"trigger": self.trigger_key, "error": repr(exc)})
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, TimeoutError):
                pass


class CoreNatsAdapter(_NatsBase):
    """`Source[Msg]` for a core NATS queue-group subscription: at most once, retried in-process."""

    def __init__(self, trigger: Trigger, metrics: TriggerMetrics, connect: Connect) -> None:
        super().__init__(trigger, metrics, connect)
        self.queue_group = self.source.queue_group or default_name(trigger)
        self._inbox: asyncio.Queue[Msg] = asyncio.Queue(maxsize=max(64, trigger.spec.delivery.concurrency))
        self._sub: Subscription | None = None

    async def _on_msg(self, msg: Msg) -> None:
        await self._inbox.put(msg)  # full: nats-py buffers in the subscription (its pending limits apply)

    async def open(self, revoke: Revoke) -> None:
        nc = await self._client()
        try:
            self._sub = await nc.subscribe(self.source.subject, queue=self.queue_group, cb=self._on_msg)
            await nc.flush(timeout=5)
        except (TimeoutError, nats.errors.Error) as exc:
            raise SourceUnreachable(f"cannot reach {self.broker}: {type(exc).__name__}: {exc}") from exc

    async def fetch(self, limit: int) -> Sequence[Msg]:
        inbox = self._inbox
        try:
            async with asyncio.timeout(FETCH_IDLE_TIMEOUT):  # wait_for could lose a message on cancel
                first = await inbox.get()
        except TimeoutError:
            return ()
        out = [first]
        while len(out) < limit and not inbox.empty():
            out.append(inbox.get_nowait())
        return out

    def decode(self, msg: Msg) -> CloudEvent:
        event = from_nats(msg.headers, msg.data)
        if event is None:
            event = wrap_nats_message(
                subject=msg.subject, stream=None, sequence=None, timestamp=datetime.now(UTC),
                headers=msg.headers, payload=msg.data, event_type=self.event_type,
                event_source=self._event_source(msg.subject),
            )
        return event

    def raw(self, msg: Msg) -> RawInput:
        return RawInput(id=str(uuid.uuid4()), source=self._event_source(msg.subject), data=msg.data,
                        content_type=(msg.headers or {}).get("Content-Type"))

    def attempt(self, msg: Msg) -> int:
        return 1

    async def ack(self, msg: Msg) -> None:
        pass

    async def nak(self, msg: Msg, delay: float) -> None:
        raise NotImplementedError("core NATS retries in-process")

    async def housekeeping(self) -> None:
        await asyncio.Event().wait()

    async def stop_intake(self) -> Sequence[Msg]:
        """Stop receiving and hand over what arrived: drain the subscription while emptying the inbox
        (its callback waits on the inbox), for at most DRAIN_INTAKE seconds."""
        sub, self._sub = self._sub, None
        out: list[Msg] = []
        if sub is None:
            return out
        drain = asyncio.ensure_future(sub.drain())  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + DRAIN_INTAKE
        while (not drain.done() or not self._inbox.empty()) and time.monotonic() < deadline:
            try:
                async with asyncio.timeout(0.05):
                    out.append(await self._inbox.get())
            except TimeoutError:
                pass
        if not drain.done():
            drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)
        return out

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except (nats.errors.Error, TimeoutError):
                pass
        while not self._inbox.empty():
            self._inbox.get_nowait()


class NatsTrigger(SourceDriver[Msg]):
    """Runs one NATS trigger until stopped: JetStream (at least once) or core NATS (at most once)."""

    def __init__(self, trigger: Trigger, pipeline: Pipeline, *, connect: Connect) -> None:
        src = trigger.spec.source.nats
        assert src is not None
        adapter: Source[Msg]
        total_limit: int | None = None
        if src.jetstream is not None:
            js = JetStreamAdapter(trigger, pipeline.metrics, connect, src.jetstream, pipeline.max_attempts)
            # the server cannot pause one subject: hold up to the consumer's ack-pending bound, so a hot
            # subject's queue does not stop quiet subjects from being fetched (`in_progress` keeps them)
            adapter, total_limit = js, js.max_ack_pending
        else:
            adapter = CoreNatsAdapter(trigger, pipeline.metrics, connect)
        super().__init__(trigger, pipeline, adapter, total_limit=total_limit)
