"""The HTTP ingress: one aiohttp server on one port for every HTTP trigger and for `POST /topics/<name>`.

Why one server: webhooks and producers need a single, stable address per runtime (one Service, one port),
and the admission rules (body limit, in-flight bound, CloudEvents webhook status codes) must be the same
everywhere. Routes are kept in a dict rather than in aiohttp's router because triggers come and go while
the server runs, and aiohttp freezes its router at start.

Status codes follow the CloudEvents webhook spec (`http-webhook.md` v1.0.2): 400 for an invalid event
(a JSON body names the field), 415 for a format not understood, 413 above the body limit, 429 with
`Retry-After` when saturated, 503 while the bus cannot take events. A 2xx is only sent after the broker
acknowledged (see the `TopicPublisher` contract), so nothing accepted is lost.

`/topics` is guarded (README "Security"): with a publishers file every request needs a listed bearer token
(401) and may only write to that token's topic patterns (403); without one, only loopback clients of a
loopback-bound ingress may publish. Reserved subjects/topics (`schemas.names`) are refused with 403 for
everyone. Limits: header size and count, a body read deadline (408), a per-token request rate (429) and a
maximum number of open connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from connectors.http_auth import PublisherAuth, PublisherToken, Unauthorized
from schemas import http_binding
from schemas.cloudevent import AttributeValue, CloudEvent, format_time, is_media_type, is_valid_string, make_event
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.headers import find_header
from schemas.names import ReservedName, check_publishable

log = logging.getLogger("eventbus.ingress")

MIN_BODY = 64 * 1024
"""CloudEvents (spec.md L505-511): intermediaries MUST forward events of 64 KiB or less."""
DEFAULT_MAX_BODY = 1 << 20
DEFAULT_MAX_IN_FLIGHT = 1024
DEFAULT_EVENT_TYPE = "dev.eventbus.http.request"
TOPICS_PREFIX = "/topics/"

ID_HEADERS = ("ce-id", "webhook-id", "x-github-delivery", "x-gitlab-event-uuid", "x-shopify-webhook-id",
              "idempotency-key")
"""Headers that carry a sender's delivery id: a raw request that has one keeps it as the event `id`, so a
webhook the sender redelivers keeps its id (consumers may deduplicate on `source` + `id`)."""


class IngressError(Exception):
    """An HTTP error answer with a JSON body `{"error": code, "message": ..., [field, location, member]}`."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None,
                 close: bool = False, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.close = close
        self.details = {k: v for k, v in details.items() if v is not None}

    def response(self) -> web.Response:
        body = {"error": self.code, "message": self.message, **self.details}
        resp = web.json_response(body, status=self.status, headers=self.headers)
        if self.close:
            resp.force_close()
        return resp


def invalid_event(exc: InvalidCloudEvent) -> IngressError:
    """400 naming the attribute or header at fault."""
    return IngressError(400, "invalid_event", str(exc), field=exc.field, location=exc.location if exc.field else None,
                        member=exc.member)


def unsupported_format(exc: UnsupportedFormat) -> IngressError:
    return IngressError(415, "unsupported_format", str(exc), content_type=exc.content_type)


class BusUnavailable(RuntimeError):
    """The bus cannot take events right now (unreachable, disconnected, no ack in time): answer 503."""


class NoSuchTopic(LookupError):
    """The topic does not exist (Kafka) or no JetStream stream covers the subject (NATS): answer 404."""


class InvalidTopic(ValueError):
    """A name that cannot be a Kafka topic / a NATS publish subject (wildcards, spaces, empty tokens): 400."""


class EventTooLarge(ValueError):
    """The bus refuses the message size (NATS max_payload, Kafka max request size): answer 413."""


class TopicPublisher(Protocol):
    """Writes events to a named topic of the configured bus; returns only after the broker's ack.

    Raises BusUnavailable, NoSuchTopic, EventTooLarge or InvalidTopic."""

    async def publish(self, topic: str, events: Sequence[CloudEvent]) -> None: ...


Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]
"""A trigger's route: gets the request and its body (already read within the limit)."""


@dataclass(frozen=True)
class IngressLimits:
    """What one client may take of the ingress. Defaults are safe for a shared network; 0 turns a rate off."""

    max_header_size: int = 8190  # bytes of one header line (request line included): 400 above
    max_headers: int = 100  # header fields per request: 400 above
    body_timeout: float = 15.0  # seconds to receive the whole body: 408 after (slowloris)
    rate_limit: float = 1000.0  # /topics requests per second per publisher token (0 = no limit)
    rate_burst: int = 0  # requests a token may send at once (0 = same as rate_limit, at least 1)
    max_connections: int = 4096  # open connections; above, a new one gets 503 and is closed
    idle_timeout: float = 75.0  # a connection with no request (or a half-sent header) is closed after this

    def __post_init__(self) -> None:
        for name in ("max_header_size", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.body_timeout <= 0 or self.idle_timeout <= 0:
            raise ValueError("body and idle timeouts must be > 0")
        if self.rate_limit < 0 or self.rate_burst < 0:
            raise ValueError("rate limit and burst must be >= 0")

    @property
    def burst(self) -> float:
        return float(self.rate_burst) if self.rate_burst else max(1.0, self.rate_limit)


@dataclass(frozen=True)
class IngressConfig:
    port: int = 8080
    host: str = "127.0.0.1"
    max_body: int = DEFAULT_MAX_BODY
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    retry_after: int = 1
    limits: IngressLimits = field(default_factory=IngressLimits)

    def __post_init__(self) -> None:
        if self.max_body < MIN_BODY:
            raise ValueError(f"max body {self.max_body} is below 64 KiB: CloudEvents of 64 KiB must always pass")
        if self.max_in_flight < 1:
            raise ValueError("max in-flight must be >= 1")


def is_loopback_host(host: str) -> bool:
    """Whether a bind address (or a peer address) is loopback only: `127.0.0.0/8`, `::1`, `localhost`."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


class RateLimiter:
    """Token buckets by key (a publisher's name): `rate` per second, up to `burst` at once. At most
    `max_keys` buckets are kept (least recently used forgotten: bounded memory)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float | None:
        """None if a request may pass now; else the seconds until one may."""
        if self.rate <= 0:
            return None
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            self._buckets.move_to_end(key)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return None
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate


# --- request decoding (pure) -----------------------------------------------------------------


def decode_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    host: str,
    path: str,
    event_type: str | None = None,
    event_source: str | None = None,
    allow_raw: bool = True,
    now: datetime | None = None,
) -> list[CloudEvent]:
    """The CloudEvents in a request: binary, structured or batch mode; or, with `allow_raw`, a raw body
    wrapped as one event (no `ce-specversion`, not structured).

    A raw event gets id = a delivery-id header (`ID_HEADERS`) or a new UUID, source `http://<host><path>`
    (or `event_source`), type `event_type` (default `dev.eventbus.http.request`), `time` = now, and
    `datacontenttype` = Content-Type when it is a valid media type. Raises InvalidCloudEvent /
    UnsupportedFormat; without `allow_raw` a raw body is InvalidCloudEvent.
    """
    content_type = find_header(headers, "content-type")
    mode = http_binding.detect_mode(content_type)
    if mode != "binary" or http_binding.is_binary_cloudevent(headers):
        return http_binding.from_http(headers, body)
    if not allow_raw:
        raise InvalidCloudEvent(
            "not a CloudEvent: no ce-specversion header (binary mode) and Content-Type is not "
            "application/cloudevents+json (structured) or application/cloudevents-batch+json (batch)",
            "ce-specversion", location="header",
        )
    return [wrap_raw_request(headers, body, host=host, path=path, event_type=event_type,
                             event_source=event_source, now=now)]


def wrap_raw_request(
    headers: Mapping[str, str],
    body: bytes,
    *,
    host: str,
    path: str,
    event_type: str | None = None,
    event_source: str | None = None,
    now: datetime | None = None,
) -> CloudEvent:
    """A raw HTTP request as a CloudEvent (see `decode_request`); the body bytes are the data, untouched."""
    event_id = None
    for name in ID_HEADERS:
        value = find_header(headers, name)
        if value and is_valid_string(value.strip()) and value.strip():
            event_id = value.strip()
            break
    source = event_source or f"http://{host}{path}"
    if not is_valid_string(source):
        source = f"http://localhost{path}"
    attrs: dict[str, AttributeValue] = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": event_type or DEFAULT_EVENT_TYPE,
        "time": format_time(now or datetime.now(UTC)),
    }
    content_type = find_header(headers, "content-type")
    if content_type and is_media_type(content_type.strip()):
        attrs["datacontenttype"] = content_type.strip()
    data: bytes | None = bytes(body) if (body or content_type) else None
    return make_event(attrs, data)


def decode_or_error(headers: Mapping[str, str], body: bytes, **kwargs: Any) -> list[CloudEvent]:
    """`decode_request`, with its errors turned into the matching IngressError (400 / 415)."""
    try:
        return decode_request(headers, body, **kwargs)
    except InvalidCloudEvent as exc:
        raise invalid_event(exc) from None
    except UnsupportedFormat as exc:
        raise unsupported_format(exc) from None


# --- the server ------------------------------------------------------------------------------


class HttpIngress:
    """The shared ingress server. Triggers `add_route`/`remove_route` while it runs."""

    def __init__(
        self,
        config: IngressConfig,
        *,
        topics: TopicPublisher | None = None,
        extra_routes: Sequence[web.RouteDef] = (),
        publishers: PublisherAuth | None = None,
    ) -> None:
        self.config = config
        self.topics = topics
        self.publishers = publishers
        self.loopback_only = is_loopback_host(config.host)
        self._rate = RateLimiter(config.limits.rate_limit, config.limits.burst)
        self._internal_topics: dict[str, int] = {}
        self._routes: dict[str, Handler] = {}
        self._extra = list(extra_routes)
        self._runner: web.AppRunner | None = None
        self.in_flight = 0
        self.port = config.port
        self.on_in_flight: list[Callable[[int], None]] = []

    # --- routes -------------------------------------------------------------------------------

    def add_route(self, path: str, handler: Handler) -> None:
        if path in self._routes:
            raise ValueError(f"HTTP path {path} is already served by another trigger")
        if path.startswith(TOPICS_PREFIX) or path in ("/healthz", "/readyz", "/metrics"):
            raise ValueError(f"HTTP path {path} is reserved by the ingress")
        self._routes[path] = handler

    def remove_route(self, path: str, handler: Handler | None = None) -> None:
        if handler is None or self._routes.get(path) == handler:  # ==: a bound method is a new object each time
            self._routes.pop(path, None)

    @property
    def paths(self) -> list[str]:
        return sorted(self._routes)

    def reserve_topic(self, topic: str) -> None:
        """An async HTTP trigger parks events on `topic`: `/topics` must not write there (its auth would
        be skipped)."""
        self._internal_topics[topic] = self._internal_topics.get(topic, 0) + 1

    def release_topic(self, topic: str) -> None:
        n = self._internal_topics.get(topic, 0) - 1
        if n > 0:
            self._internal_topics[topic] = n
        else:
            self._internal_topics.pop(topic, None)

    def topics_policy(self) -> str:
        """One sentence on who may `POST /topics` (logged at start-up)."""
        if self.publishers is not None:
            names = ", ".join(p.name for p in self.publishers.publishers)
            return f"/topics needs a bearer token from the publishers file ({names})"
        if self.loopback_only:
            return ("/topics accepts unauthenticated requests from loopback addresses only "
                    "(no --publishers file; the ingress listens on a loopback address)")
        return (f"/topics answers 401 to every request: the ingress listens on {self.config.host}, which is "
                "not loopback, and no --publishers file was given (give one, or --host 127.0.0.1)")

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        # aiohttp enforces client_max_size while reading; the Content-Length check below answers sooner.
        lim = self.config.limits
        app = web.Application(client_max_size=self.config.max_body)
        app.add_routes(self._extra)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0, max_line_size=lim.max_header_size,
                               max_field_size=lim.max_header_size, max_headers=lim.max_headers,
                               keepalive_timeout=lim.idle_timeout)
        await runner.setup()
        self._limit_connections(runner, lim.max_connections)
        site = web.TCPSite(runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        if runner.addresses:
            self.port = int(runner.addresses[0][1])
        self._runner = runner
        log.info("HTTP ingress listening", extra={"host": self.config.host, "port": self.port})
        policy = self.topics_policy()
        if self.publishers is None and not self.loopback_only:
            log.warning(policy)
        else:
            log.info(policy)

    def _limit_connections(self, runner: web.AppRunner, limit: int) -> None:
        """Above `limit` open connections, a new one is answered 503 and closed at once, before it can
        hold memory or a request slot (aiohttp's Server has no such limit of its own)."""
        server = runner.server
        assert server is not None
        accept = server.connection_made

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            accept(handler, transport)
            if len(server.connections) > limit:
                transport.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                                b"Connection: close\r\n\r\n")
                handler.force_close()

        server.connection_made = connection_made  # type: ignore[method-assign]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- requests -----------------------------------------------------------------------------

    def _set_in_flight(self, delta: int) -> None:
        self.in_flight += delta
        for cb in self.on_in_flight:
            cb(self.in_flight)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # Saturation is judged before reading the body: a saturated server must not buffer more.
        if self.in_flight >= self.config.max_in_flight:
            return IngressError(429, "saturated", f"more than {self.config.max_in_flight} requests in flight",
                                headers={"Retry-After": str(self.config.retry_after)}).response()
        try:
            return await self._dispatch(request)
        except IngressError as exc:
            return exc.response()

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        handler = self._routes.get(path)
        is_topic = handler is None and path.startswith(TOPICS_PREFIX)
        if handler is None and not is_topic:
            raise IngressError(404, "not_found", f"no trigger serves {path}")
        if request.method != "POST":
            raise IngressError(405, "method_not_allowed", f"{request.method} {path}: use POST",
                               headers={"Allow": "POST"})
        publisher = self._admit_publisher(request) if is_topic else None
        # A request holds an in-flight slot only once its body is in: a slow sender holds a connection
        # (bounded by max_connections) for at most body_timeout, never a slot other clients need.
        body = await self._read_body(request)
        self._set_in_flight(1)
        try:
            if handler is not None:
                return await handler(request, body)
            return await self._publish(request, path[len(TOPICS_PREFIX):], body, publisher)
        finally:
            self._set_in_flight(-1)

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body
        length = request.content_length
        if length is not None and length > limit:
            raise IngressError(413, "too_large", f"body of {length} bytes exceeds the limit of {limit} bytes",
                               limit=limit, close=True)
        timeout = self.config.limits.body_timeout
        try:
            async with asyncio.timeout(timeout):  # no extra task per request, unlike wait_for
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise IngressError(413, "too_large", f"body exceeds the limit of {limit} bytes", limit=limit,
                               close=True) from None
        except TimeoutError:
            log.info("request body too slow; answering 408", extra={"path": request.path, "peer": request.remote,
                                                                     "timeout_s": timeout})
            raise IngressError(408, "request_timeout", f"the request body did not arrive within {timeout:g}s",
                               close=True) from None

    # --- /topics ------------------------------------------------------------------------------

    def _admit_publisher(self, request: web.Request) -> PublisherToken | None:
        """Who is publishing (401 if nobody allowed), and whether their rate allows it now (429)."""
        if self.publishers is None:
            if not self.loopback_only:
                raise IngressError(401, "unauthorized", "publishing is closed: this ingress listens on a "
                                   "non-loopback address and has no publishers file",
                                   headers={"WWW-Authenticate": "Bearer"})
            if not is_loopback_host(request.remote or ""):
                raise IngressError(401, "unauthorized", "without a publishers file only loopback clients "
                                   "may publish", headers={"WWW-Authenticate": "Bearer"})
            return None
        try:
            publisher = self.publishers.identify(request.headers.get("Authorization"))
        except Unauthorized as exc:
            raise IngressError(401, "unauthorized", str(exc),
                               headers={"WWW-Authenticate": exc.challenge or "Bearer"}) from None
        wait = self._rate.take(publisher.name)
        if wait is not None:
            log.info("publisher over its request rate; answering 429", extra={"publisher": publisher.name})
            raise IngressError(429, "rate_limited", f"over the rate of {self.config.limits.rate_limit:g} "
                               "requests per second for this token",
                               headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return publisher

    async def _publish(self, request: web.Request, topic: str, body: bytes,
                       publisher: PublisherToken | None) -> web.StreamResponse:
        if not topic or "/" in topic:
            raise IngressError(404, "not_found", "POST /topics/<name>: name one topic")
        try:
            check_publishable(topic, also=self._internal_topics)
        except ReservedName as exc:
            raise IngressError(403, "reserved_topic", str(exc)) from None
        if publisher is not None and not publisher.allows(topic):
            log.info("publisher wrote outside its topics; answering 403",
                     extra={"publisher": publisher.name, "topic": topic})
            raise IngressError(403, "forbidden", f"this token may not publish to {topic!r}")
        if self.topics is None:
            raise IngressError(503, "no_bus", "no bus is configured for /topics",
                               headers={"Retry-After": str(self.config.retry_after)})
        events = decode_or_error(request.headers, body, host=request.host, path=request.path, allow_raw=False)
        await publish_or_error(self.topics, topic, events, retry_after=self.config.retry_after)
        return accepted(events, topic=topic)


async def publish_or_error(publisher: TopicPublisher, topic: str, events: Sequence[CloudEvent], *,
                           retry_after: int = 1) -> None:
    """Publish and map the bus's failures to 503 / 404 / 413."""
    if not events:
        return
    try:
        await publisher.publish(topic, events)
    except BusUnavailable as exc:
        log.warning("bus unavailable; answering 503", extra={"topic": topic, "error": str(exc)})
        raise IngressError(503, "bus_unavailable", str(exc), headers={"Retry-After": str(retry_after)}) from None
    except NoSuchTopic as exc:
        raise IngressError(404, "no_such_topic", str(exc), topic=topic) from None
    except EventTooLarge as exc:
        raise IngressError(413, "too_large", str(exc)) from None
    except InvalidTopic as exc:
        raise IngressError(400, "invalid_topic", str(exc), topic=topic) from None


def accepted(events: Sequence[CloudEvent], **extra: str) -> web.Response:
    """202 (accepted, not yet processed) with the ids written."""
    return web.json_response({"accepted": [e.id for e in events], **extra}, status=202)
