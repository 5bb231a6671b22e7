"""The delivery pipeline of one trigger: filter, dispatch through the gateway, retry, dead-letter, reply.

`settle()` returns only once the event's fate is decided and recorded, so the caller may then ack or
commit. A dead-letter or reply sink that is down blocks here (retried forever), it never drops.

Given a `Halt` (the driver passes its group's), the retry loop checks it before each attempt and sleeps its
backoff through it: once halted (the partition is revoked) no further attempt starts and `Halted` is raised,
after the attempt in flight, unless that one delivered the event.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter

from connectors.gateway import GatewayClient, Response, display_url
from schemas import http_binding
from schemas.cloudevent import CloudEvent, canonical_string
from schemas.deadletter import dead_letter_event, undecodable_event
from schemas.trigger import Trigger
from triggers.halt import Halt
from triggers.metrics import TriggerMetrics
from triggers.retry import Backoff, is_retryable
from triggers.sinks import EventSink, SinkError

log = logging.getLogger("eventbus.delivery")

SINK_RETRY_MAX_DELAY = 5.0


def internal_reason(exc: BaseException) -> str:
    """The dead-letter reason of an unexpected exception: `internal: <ExceptionType>: <message>`."""
    return f"internal: {type(exc).__name__}: {exc}"


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    FILTERED = "filtered"
    DEAD_LETTERED = "dead_lettered"
    DROPPED = "dropped"


@dataclass(slots=True)
class Attempt:
    """The verdict on one dispatch attempt: delivered, retry after `delay`, or failed for good."""

    response: Response
    final: bool
    reason: str

    @property
    def ok(self) -> bool:
        return self.response.ok


@dataclass(slots=True)
class Settled:
    """An event's settled fate and the function's last response (None when it was never dispatched)."""

    outcome: Outcome
    response: Response | None


class Pipeline:
    """Everything between a decoded CloudEvent and its settled fate, for one trigger."""

    def __init__(
        self,
        trigger: Trigger,
        *,
        gateway: GatewayClient,
        metrics: TriggerMetrics,
        dead_letter: EventSink | None = None,
        reply: EventSink | None = None,
    ) -> None:
        spec = trigger.spec
        self.trigger = trigger
        self.trigger_key = trigger.key
        self.gateway = gateway
        self.metrics = metrics
        self.dead_letter_sink = dead_letter
        self.reply_sink = reply
        self.delivery = spec.delivery
        self.backoff = Backoff(spec.delivery.retry)
        self.max_attempts = max(1, spec.delivery.retry.attempts)
        self.timeout = spec.delivery.timeout
        self._filter: tuple[tuple[str, str], ...] = tuple(spec.filter.attributes.items())
        fn = spec.function
        if fn.url is not None:
            self.url = fn.url
        else:
            assert fn.name is not None
            self.url = gateway.function_url(name=fn.name, namespace=fn.namespace or trigger.metadata.namespace)
        self._encode = http_binding.to_structured if spec.delivery.mode == "structured" else http_binding.to_binary

    @property
    def degraded(self) -> str | None:
        """Why this trigger's sink writes fail right now (None while they work): see triggers.sinks.GuardedSink."""
        for sink in (self.dead_letter_sink, self.reply_sink):
            reason = getattr(sink, "degraded", None)
            if reason is not None:
                return str(reason)
        return None

    # --- the parts ----------------------------------------------------------------------------

    def matches(self, event: CloudEvent) -> bool:
        """Exact match of every filter attribute (extensions included), compared as canonical strings."""
        attrs = event.attributes
        for name, want in self._filter:
            got = attrs.get(name)
            if got is None or canonical_string(got) != want:
                return False
        return True

    async def attempt(self, event: CloudEvent) -> Attempt:
        """One POST of the event to the function, judged."""
        headers, body = self._encode(event)
        started = perf_counter()
        resp = await self.gateway.post(self.url, headers, body, timeout=self.timeout)
        self.metrics.latency.observe(perf_counter() - started)
        return self.judge(resp)

    @staticmethod
    def judge(resp: Response) -> Attempt:
        """The verdict on a function's answer: delivered, retryable or final (and why)."""
        if resp.ok:
            return Attempt(resp, True, "")
        if resp.status == 0:  # no answer: retried, unless the SSRF guard refused the address (final)
            return Attempt(resp, resp.refused, resp.error or "no response")
        reason = f"function answered {resp.status}"
        snippet = resp.body[:200].decode("utf-8", "replace").strip()
        if snippet:
            reason += f": {snippet}"
        return Attempt(resp, not is_retryable(resp.status), reason)

    # --- the whole path -----------------------------------------------------------------------

    async def settle(self, event: CloudEvent, key: bytes | None = None, *, halt: Halt | None = None) -> Outcome:
        """Filter, then dispatch with retries; dead-letter or drop on failure. Returns once settled.

        With `halt`: raises `triggers.halt.Halted` (unsettled) instead of starting an attempt once halted,
        of sleeping on after it is halted, or of dead-lettering an attempt that failed while halted."""
        return (await self.deliver(event, key, halt=halt)).outcome

    async def deliver(self, event: CloudEvent, key: bytes | None = None, *, halt: Halt | None = None) -> Settled:
        """`settle`, also keeping the function's last response (sync HTTP triggers answer with it).

        The first POST is written out here rather than through `attempt`: it is the hot path, and a delivered
        event then costs no verdict object and no extra coroutine."""
        m = self.metrics
        m.received.inc()
        if self._filter and not self.matches(event):
            m.filtered.inc()
            return Settled(Outcome.FILTERED, None)
        in_flight = m.in_flight
        in_flight.value += 1
        try:
            headers, body = self._encode(event)  # once: every attempt sends the same request
            n = 0
            while True:
                n += 1
                if halt is not None and halt.halted:
                    halt.check()  # raises Halted
                started = perf_counter()
                resp = await self.gateway.post(self.url, headers, body, timeout=self.timeout)
                m.latency.observe(perf_counter() - started)
                if 200 <= resp.status < 300:
                    m.delivered.value += 1
                    if self.reply_sink is not None:
                        await self.publish_reply(event, resp)
                    return Settled(Outcome.DELIVERED, resp)
                result = self.judge(resp)
                if halt is not None:
                    halt.check()  # failed while revoked: the next owner delivers it, not a dead letter
                if result.final or n >= self.max_attempts:
                    why = result.reason if result.final else f"retries exhausted: {result.reason}"
                    outcome = await self.fail(event, why, result.response.status, n, key)
                    return Settled(outcome, result.response)
                m.retried.inc()
                delay = self.backoff.delay(n, result.response.retry_after())
                await (asyncio.sleep(delay) if halt is None else halt.sleep(delay))
        finally:
            in_flight.value -= 1

    async def fail_internal(self, event: CloudEvent, exc: BaseException, *, attempts: int = 0,
                            key: bytes | None = None) -> Outcome:
        """Settle an event whose handling raised: logged with its traceback, then dead-lettered (or dropped)
        with the reason `internal: <ExceptionType>: <message>`."""
        log.error("unexpected error while handling an event; dead-lettering it",
                  extra={"trigger": self.trigger_key, "event_id": event.id, "error": internal_reason(exc)},
                  exc_info=exc)
        return await self.fail(event, internal_reason(exc), 0, attempts, key)

    async def settle_once(self, event: CloudEvent, delivery: int) -> float | None:
        """One delivery of an event a broker redelivers (JetStream): dispatch once; returns None when the
        fate is settled (delivered, filtered, dead-lettered, dropped), else the delay before the redelivery
        the caller asks for (`nak`)."""
        m = self.metrics
        m.received.inc()
        if self._filter and not self.matches(event):
            m.filtered.inc()
            return None
        m.in_flight.inc()
        try:
            result = await self.attempt(event)
            if result.ok:
                m.delivered.inc()
                if self.reply_sink is not None:
                    await self.publish_reply(event, result.response)
                return None
            if result.final or delivery >= self.max_attempts:
                why = result.reason if result.final else f"retries exhausted: {result.reason}"
                await self.fail(event, why, result.response.status, delivery)
                return None
            m.retried.inc()
            return self.backoff.delay(delivery, result.response.retry_after())
        finally:
            m.in_flight.dec()

    async def fail(
        self, event: CloudEvent, reason: str, code: int, attempts: int, key: bytes | None = None
    ) -> Outcome:
        """Dead-letter the event, or drop it (logged and counted) when the trigger has no sink."""
        if self.dead_letter_sink is None:
            self.metrics.dropped.inc()
            log.error(
                "dropped event: trigger has no dead-letter sink",
                extra={"trigger": self.trigger_key, "event_id": event.id, "event_source": event.source,
                       "reason": reason, "code": code, "attempts": attempts},
            )
            return Outcome.DROPPED
        dead = dead_letter_event(
            event, reason=reason, code=code, attempts=attempts, trigger=self.trigger_key, at=datetime.now(UTC)
        )
        await self._write_until_done(self.dead_letter_sink, dead, "dead-letter", key)
        self.metrics.dead_lettered.inc()
        log.warning(
            "dead-lettered event",
            extra={"trigger": self.trigger_key, "event_id": event.id, "reason": reason, "code": code,
                   "attempts": attempts},
        )
        return Outcome.DEAD_LETTERED

    async def settle_undecodable(
        self, *, id: str, source: str, raw: bytes | None, content_type: str | None, reason: str,
        key: bytes | None = None,
    ) -> Outcome:
        """Input that is not a valid CloudEvent goes to the dead-letter sink as its raw bytes with a reason."""
        self.metrics.received.inc()
        if self.dead_letter_sink is None:
            self.metrics.dropped.inc()
            log.error("dropped undecodable input: trigger has no dead-letter sink",
                      extra={"trigger": self.trigger_key, "event_id": id, "reason": reason})
            return Outcome.DROPPED
        dead = undecodable_event(
            id=id, source=source, raw=raw, content_type=content_type, reason=reason, trigger=self.trigger_key,
            at=datetime.now(UTC),
        )
        await self._write_until_done(self.dead_letter_sink, dead, "dead-letter", key)
        self.metrics.dead_lettered.inc()
        log.warning("dead-lettered undecodable input", extra={"trigger": self.trigger_key, "event_id": id,
                                                               "reason": reason})
        return Outcome.DEAD_LETTERED

    async def publish_reply(self, event: CloudEvent, response: Response) -> None:
        """A 2xx with a body becomes a reply event: kept as-is if it is a CloudEvent, wrapped otherwise."""
        if not response.body and "ce-specversion" not in response.headers:
            return
        reply = reply_event(event, response.headers, response.body, display_url(self.url))
        if reply is None:
            return
        await self._write_until_done(self.reply_sink, reply, "reply")  # type: ignore[arg-type]
        self.metrics.replies.inc()

    async def _write_until_done(
        self, sink: EventSink, event: CloudEvent, what: str, key: bytes | None = None
    ) -> None:
        """Write to a sink, retrying with capped backoff until it succeeds: a sink outage stalls, never drops."""
        n = 0
        while True:
            try:
                await sink.send(event, key)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # SinkError, or a sink's bug: either way stall and retry, never drop
                n += 1
                self.metrics.family.sink_errors.labels(self.trigger_key, what,
                                                       "permanent" if isinstance(exc, SinkError) and exc.permanent
                                                       else "transient").inc()
                delay = min(SINK_RETRY_MAX_DELAY, 0.1 * (2 ** min(n, 10)))
                log.error(
                    f"{what} sink write failed; retrying (nothing is committed past this event)",
                    extra={"trigger": self.trigger_key, "event_id": event.id,
                           "error": str(exc) if isinstance(exc, SinkError) else internal_reason(exc), "attempt": n,
                           "retry_in": round(delay, 3)},
                )
                await asyncio.sleep(delay)


def reply_event(
    event: CloudEvent, headers: Mapping[str, str], body: bytes, function_url: str
) -> CloudEvent | None:
    """The reply for a function's 2xx answer: its own CloudEvent if it sent one, else the body wrapped."""
    try:
        own = http_binding.from_http_response(headers, body)
    except ValueError:
        own = None
    if own is not None:
        return own
    if not body:
        return None
    attrs: dict[str, str | int | bool] = {
        "specversion": "1.0",
        "id": event.id,
        "source": function_url,
        "type": f"{event.type}.reply",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    ctype = headers.get("Content-Type")
    if ctype:
        attrs["datacontenttype"] = ctype
    pk = event.attributes.get("partitionkey")
    if pk is not None:
        attrs["partitionkey"] = pk
    return CloudEvent(attrs, body)
