"""The HTTP trigger controller: a path on the shared ingress whose requests become CloudEvents.

`sync`: the event is dispatched at once through the Pipeline (filter, retries, dead-letter, reply) and the
caller gets the function's answer (status, headers, body) — request/response webhooks need that.
`async`: the event is first written to the durable bus (`spec.source.http.topic`, Kafka or JetStream) with
a broker ack, the caller gets 202, and an internal consumer of that topic delivers it with the usual
retries. Async is the mode for senders that cannot wait or retry well: once 202 is sent, the event is
the bus's responsibility, so an eventbus crash loses nothing.

Auth failures answer 401 before anything is decoded or dispatched. HTTP requests in flight are the
trigger's lag (added to the consumer's lag in async mode), so autoscaling sees HTTP pressure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict

from connectors.gateway import Response
from connectors.http_auth import Authenticator, Replayed, Unauthorized
from connectors.http_ingress import (
    DEFAULT_EVENT_TYPE,
    HttpIngress,
    IngressError,
    TopicPublisher,
    accepted,
    decode_or_error,
    publish_or_error,
)
from schemas.cloudevent import CloudEvent
from schemas.trigger import HttpSource, Trigger
from triggers.delivery import Pipeline, internal_reason

log = logging.getLogger("eventbus.http")

LAG_INTERVAL = 1.0
INNER_MAX_BACKOFF = 30.0
READY_POLL = 0.25

# Hop-by-hop and transport headers of the function's answer that must not be copied to our answer
# (the gateway client already decompressed the body, so Content-Encoding would lie).
_DROP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding",
                           "date", "server", "upgrade", "proxy-authenticate", "te", "trailer"})


class InnerController(Protocol):
    """The consumer of an async trigger's topic (a KafkaTrigger or NatsTrigger on a derived Trigger)."""

    ready: asyncio.Event

    async def run(self, grace: float) -> None: ...

    def stop(self) -> None: ...


class HttpTrigger:
    """Serves one trigger's path until stopped; in async mode also runs the topic's consumer."""

    def __init__(
        self,
        trigger: Trigger,
        pipeline: Pipeline,
        *,
        ingress: HttpIngress,
        publisher: TopicPublisher | None = None,
        topic: str | None = None,
        make_inner: Callable[[], Awaitable[InnerController]] | None = None,
    ) -> None:
        src = trigger.spec.source.http
        assert src is not None
        self.trigger = trigger
        self.source: HttpSource = src
        self.pipeline = pipeline
        self.ingress = ingress
        self.auth = Authenticator.from_spec(src.auth)
        self.async_mode = src.mode == "async"
        if self.async_mode and (publisher is None or topic is None or make_inner is None):
            raise ValueError(f"{trigger.key}: async HTTP trigger needs a topic, a publisher and a consumer")
        self.publisher = publisher
        self.topic = topic
        self._make_inner = make_inner
        self._inner: InnerController | None = None
        self.event_type = trigger.spec.event.type or DEFAULT_EVENT_TYPE
        self.event_source = trigger.spec.event.source
        self.ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.lag = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self.ready.clear()

    async def run(self, grace: float = 30.0) -> None:
        """Serve the path until `stop()`; then answer 503 to new requests, finish in-flight ones within
        `grace`, stop the consumer (async mode) and release the path."""
        self.ingress.add_route(self.source.path, self._handle)
        if self.async_mode and self.topic is not None:
            self.ingress.reserve_topic(self.topic)  # /topics must not forge events past this trigger's auth
        inner_task: asyncio.Task[None] | None = None
        lag_task = asyncio.create_task(self._lag_loop())
        try:
            if self.async_mode:
                inner_task = asyncio.create_task(self._run_inner(grace), name=f"http-inner:{self.trigger.key}")
            else:
                self.ready.set()
            log.info("HTTP trigger serving", extra={"trigger": self.trigger.key, "path": self.source.path,
                                                    "mode": self.source.mode, "topic": self.topic})
            await self._stopping.wait()
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                log.warning("grace period over with HTTP requests in flight",
                            extra={"trigger": self.trigger.key, "in_flight": self.in_flight})
        finally:
            if self._inner is not None:
                self._inner.stop()
            if inner_task is not None:
                await asyncio.gather(inner_task, return_exceptions=True)
            lag_task.cancel()
            await asyncio.gather(lag_task, return_exceptions=True)
            self.ingress.remove_route(self.source.path, self._handle)
            if self.async_mode and self.topic is not None:
                self.ingress.release_topic(self.topic)

    async def _run_inner(self, grace: float) -> None:
        """Run the topic's consumer, restarting it with backoff if it fails (bus down): the HTTP path stays
        up meanwhile and answers 503 while the bus cannot take writes."""
        assert self._make_inner is not None
        delay = 1.0
        while not self._stopping.is_set():
            try:
                inner = self._inner = await self._make_inner()
                waiter = asyncio.create_task(self._mark_ready(inner))
                try:
                    await inner.run(grace)
                finally:
                    waiter.cancel()
                    self.ready.clear()
                if self._stopping.is_set():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("async HTTP trigger: topic consumer failed; restarting",
                          extra={"trigger": self.trigger.key, "topic": self.topic,
                                 "error": f"{type(exc).__name__}: {exc}", "retry_in": delay})
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, INNER_MAX_BACKOFF)

    async def _mark_ready(self, inner: InnerController) -> None:
        """Mirror the consumer's readiness (it clears it during broker outages and restarts)."""
        while True:
            if inner.ready.is_set() and not self._stopping.is_set():
                self.ready.set()
            else:
                self.ready.clear()
            await asyncio.sleep(READY_POLL)

    async def _lag_loop(self) -> None:
        while True:
            self._update_lag()
            await asyncio.sleep(LAG_INTERVAL)

    def _update_lag(self) -> None:
        inner_lag = int(getattr(self._inner, "lag", 0) or 0)
        self.lag = self.in_flight + inner_lag
        self.pipeline.metrics.lag.set(self.lag)

    # --- requests -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if self._stopping.is_set():
            raise IngressError(503, "stopping", "trigger is stopping", headers={"Retry-After": "1"})
        try:
            claim = self.auth.check(request.headers, body)
        except Unauthorized as exc:
            log.info("HTTP request rejected by auth", extra={"trigger": self.trigger.key, "reason": str(exc)})
            headers = {"WWW-Authenticate": exc.challenge} if exc.challenge else None
            raise IngressError(401, "unauthorized", str(exc), headers=headers) from None
        except Replayed as exc:
            log.info("HTTP request rejected as a replay", extra={"trigger": self.trigger.key})
            raise IngressError(409, "replayed", str(exc)) from None
        accepted_ = False
        try:
            resp = await self._handle_authenticated(request, body)
            accepted_ = resp.status < 300
            return resp
        finally:
            if not accepted_:
                claim.release()  # not accepted: the sender's retry of this delivery must pass

    async def _handle_authenticated(self, request: web.Request, body: bytes) -> web.StreamResponse:
        events = decode_or_error(request.headers, body, host=request.host, path=request.path,
                                 event_type=self.event_type, event_source=self.event_source)
        self.in_flight += 1
        self._idle.clear()
        self._update_lag()
        try:
            if self.async_mode:
                assert self.publisher is not None and self.topic is not None
                await publish_or_error(self.publisher, self.topic, events)
                return accepted(events, topic=self.topic)
            return await self._dispatch_sync(events)
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()
            self._update_lag()

    async def _dispatch_sync(self, events: Sequence[CloudEvent]) -> web.StreamResponse:
        if len(events) == 1:
            return function_answer(await self.deliver(events[0]), events[0])
        # A batch: each member is delivered in order; the answer summarises (200 if all were delivered).
        results = []
        ok = True
        for ev in events:
            resp = await self.deliver(ev)
            ok = ok and (resp is None or resp.ok)
            results.append({"id": ev.id, "status": 204 if resp is None else resp.status})
        return web.json_response({"results": results}, status=200 if ok else 502)

    async def deliver(self, event: CloudEvent) -> Response | None:
        """`Pipeline.deliver`, keeping the function's last response for the caller; None if filtered.

        An unexpected exception settles the event like on every source (dead-lettered with
        `internal: <ExceptionType>: <message>`) and answers 500 naming it."""
        try:
            return (await self.pipeline.deliver(event)).response
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.pipeline.fail_internal(event, exc)
            raise IngressError(500, "internal", internal_reason(exc), id=event.id) from exc


def function_answer(resp: Response | None, event: CloudEvent) -> web.StreamResponse:
    """The caller's answer for one synchronously delivered event: the function's own status, headers and
    body; 204 when the filter skipped it; 502/504 (JSON) when the function never answered."""
    if resp is None:
        return web.Response(status=204, headers={"X-Eventbus-Outcome": "filtered"})
    if resp.status == 0:
        timed_out = (resp.error or "").startswith("timed out")
        body = {"error": "function_unreachable", "message": resp.error or "no response", "id": event.id}
        return web.json_response(body, status=504 if timed_out else 502)
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in resp.headers.items() if k.lower() not in _DROP_HEADERS
    )
    return web.Response(status=resp.status, headers=headers, body=resp.body)
