"""The HTTP client that reaches functions through the platform's gateway (aiohttp: the dispatch hot path).

It carries the SSRF guard: every address it connects to (function URLs, `--gateway`, `--url-template`
results, HTTP sinks) is checked against a `UrlPolicy` after DNS resolution, inside the connector's resolver,
so a name that resolves (or later re-resolves) to a refused address is refused too: no rebinding bypass.
By default link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata addresses
(169.254.169.254, fd00:ec2::254) are refused; loopback, private and public addresses are allowed.
With `--allow-url` rules, only addresses matching a rule (a host pattern or a CIDR) are allowed.
"""

from __future__ import annotations

import asyncio
import email.utils
import fnmatch
import importlib.metadata
import ipaddress
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from connectors.deadlines import Deadlines
from connectors.gateway_request import CopiedHeadersRequest

DEFAULT_URL_TEMPLATE = "{gateway}/{namespace}/{name}"


def _user_agent() -> str:
    try:
        return f"eventbus/{importlib.metadata.version('eventbus')}"
    except importlib.metadata.PackageNotFoundError:
        return "eventbus"


USER_AGENT = _user_agent()
"""Sent with every dispatch: the function sees who calls it, and aiohttp's own agent (Python and aiohttp
versions) is not advertised. A session default header, not `skip_auto_headers`: that one makes aiohttp copy
every request's headers once more."""

MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(slots=True)
class Response:
    """What one dispatch attempt came back with. `status` 0 means no HTTP answer (see `error`).
    Not frozen: one is built per dispatch, and a frozen dataclass costs ~1.3 µs more to build."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    error: str | None = None
    refused: bool = False  # the SSRF guard refused the address: final, never retried

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def retry_after(self) -> float | None:
        """Seconds from a `Retry-After` header (delta-seconds or HTTP-date), if any."""
        value = self.headers.get("Retry-After")
        if not value:
            return None
        value = value.strip()
        if value.isdigit():
            return float(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


_EMPTY: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
_NO_TIMEOUT = aiohttp.ClientTimeout()  # `Deadlines` bounds each request instead

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

REFUSED_BY_DEFAULT: tuple[tuple[IpNetwork, str], ...] = (
    (ipaddress.ip_network("169.254.169.254/32"), "the cloud metadata address"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "the cloud metadata address"),
    (ipaddress.ip_network("169.254.0.0/16"), "a link-local address"),
    (ipaddress.ip_network("fe80::/10"), "a link-local address"),
)
"""Refused unless a CIDR rule of `--allow-url` names them explicitly."""


class UrlRefused(OSError):
    """The SSRF guard refused an address (an OSError, so aiohttp's connector passes it through its resolver
    error path); the message says which address, why, and how to allow it."""


def _address(text: str) -> IpAddress:
    ip = ipaddress.ip_address(text.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@dataclass(frozen=True)
class UrlPolicy:
    """Where dispatches may connect: `--allow-url` rules (host patterns like `*.svc.cluster.local`, CIDRs
    like `10.0.0.0/8`); without rules, anywhere but link-local and metadata addresses."""

    hosts: tuple[str, ...] = ()
    networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def parse(cls, rules: Iterable[str]) -> UrlPolicy:
        """Rules as given on the command line; a URL counts as its host. ValueError names a bad rule."""
        hosts: list[str] = []
        networks: list[IpNetwork] = []
        for raw in rules:
            rule = raw.strip()
            if "://" in rule:
                rule = URL(rule).host or ""
            if not rule:
                raise ValueError(f"--allow-url {raw!r}: give a host pattern, an IP address or a CIDR")
            try:
                networks.append(ipaddress.ip_network(rule.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if "/" in rule or not all(c.isalnum() or c in "-.*_" for c in rule):
                raise ValueError(f"--allow-url {raw!r}: not a host pattern (like *.svc.cluster.local) or a CIDR")
            hosts.append(rule.lower().rstrip("."))
        return cls(tuple(hosts), tuple(networks))

    @property
    def has_rules(self) -> bool:
        return bool(self.hosts or self.networks)

    def check(self, host: str, address: str) -> None:
        """Raise UrlRefused unless connecting to `address` (resolved from `host`) is allowed."""
        try:
            ip = _address(address)
        except ValueError:
            raise UrlRefused(f"{address!r} (from host {host!r}) is not an IP address") from None
        if any(ip in net for net in self.networks):
            return
        named = host if host == address else f"{host!r} resolves to {address}"
        for net, what in REFUSED_BY_DEFAULT:
            if ip in net:
                raise UrlRefused(f"refused by the SSRF guard: {named}, {what} (allow it explicitly with "
                                 f"--allow-url {ip}/{net.max_prefixlen})")
        if not self.has_rules:
            return
        name = host.lower().rstrip(".")
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.hosts):
            return
        raise UrlRefused(f"refused by the SSRF guard: {named}, which matches no --allow-url rule")


class GuardedResolver(AbstractResolver):
    """Wraps a resolver (aiohttp's default) and keeps only the addresses the policy allows; none left is a
    UrlRefused. The connector connects only to what this returns, so the check is on the address used."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if self.inner is None:
            self.inner = aiohttp.DefaultResolver()
        results = await self.inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refusal: UrlRefused | None = None
        for r in results:
            try:
                self.policy.check(host, r["host"])
            except UrlRefused as exc:
                refusal = exc
                continue
            allowed.append(r)
        if not allowed:
            raise refusal or UrlRefused(f"{host!r} resolved to no address")
        return allowed

    async def close(self) -> None:
        if self.inner is not None:
            await self.inner.close()


def display_url(url: str) -> str:
    """The URL without a password (`http://user:***@host/`): for logs, sink names and reply sources.
    aiohttp sends URL credentials as Basic auth, so they are secrets like any other."""
    try:
        parsed = URL(url)
    except ValueError:
        return url
    if parsed.password is None:
        return url
    return str(parsed.with_password("***"))


def _refusal(exc: BaseException) -> UrlRefused | None:
    """The UrlRefused behind an aiohttp connection error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UrlRefused):
            return seen
        inner = getattr(seen, "os_error", None)
        if isinstance(inner, UrlRefused):
            return inner
        seen = seen.__cause__
    return None


async def _read_rest(content: aiohttp.StreamReader, first: bytes) -> bytes:
    """The rest of a body that came in several chunks, up to MAX_RESPONSE_BYTES in all (a longer one is
    cut there: the event is delivered either way, and a reply is never bigger than that)."""
    parts = [first]
    size = len(first)
    while size < MAX_RESPONSE_BYTES:
        chunk = await content.read(MAX_RESPONSE_BYTES - size)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class GatewayClient:
    """One pooled aiohttp session shared by every trigger of a runtime."""

    def __init__(self, gateway: str | None, *, url_template: str = DEFAULT_URL_TEMPLATE, limit: int = 0,
                 url_policy: UrlPolicy | None = None, resolver: AbstractResolver | None = None) -> None:
        self.gateway = gateway.rstrip("/") if gateway else None
        self.url_template = url_template
        self._limit = limit
        self.url_policy = url_policy or UrlPolicy()
        self._resolver = resolver  # the resolver the guard wraps (tests inject one); default aiohttp's
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = Deadlines()
        self._loop: asyncio.AbstractEventLoop | None = None  # the session's
        self._literal: dict[str, UrlRefused | None] = {}

    def function_url(self, *, name: str, namespace: str) -> str:
        if self.gateway is None:
            raise GatewayNotConfigured(
                f"function {namespace}/{name} is reached through the gateway, but no gateway is configured "
                "(pass --gateway URL or set function.url)"
            )
        return self.url_template.format(gateway=self.gateway, namespace=namespace, name=name)

    async def start(self) -> None:
        if self._session is None:
            self._loop = asyncio.get_running_loop()
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=300,
                                             resolver=GuardedResolver(self.url_policy, self._resolver))
            # No cookie jar: every function sits behind the gateway's one host, so a Set-Cookie from one
            # would ride along on every later event to any other (and the jar's filtering per request
            # cost ~8% of a POST's CPU, measured).
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, headers={"User-Agent": USER_AGENT},
                cookie_jar=aiohttp.DummyCookieJar(), request_class=CopiedHeadersRequest,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._deadlines.close()

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float) -> Response:
        """POST once; connection errors and timeouts become a status-0 Response, never an exception.

        The timeout covers the whole request (connect, send, the response and its body). It is kept by
        `Deadlines`, not by aiohttp: the same bound without a loop timer per request."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            refused = self._literal[url]  # the cache of `_check_literal`, looked up here: once per dispatch
        except KeyError:
            refused = self._check_literal(url)
        if refused is not None:
            return Response(0, _EMPTY, b"", str(refused), refused=True)
        task = asyncio.current_task(self._loop)  # with the loop: no running-loop lookup per dispatch
        assert task is not None
        cancelling = task.cancelling()
        deadlines = self._deadlines
        deadlines.start(task, timeout)
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=_NO_TIMEOUT, allow_redirects=False
            ) as resp:
                content = resp.content
                data = await content.read(MAX_RESPONSE_BYTES)  # the whole body, when it came in one chunk
                if data and not content.at_eof():
                    data = await _read_rest(content, data)
                return Response(resp.status, resp.headers, data)
        except asyncio.CancelledError:
            if deadlines.expired(task) and task.uncancel() <= cancelling:
                return Response(0, _EMPTY, b"", f"timed out after {timeout:g}s")
            raise  # cancelled by someone else (a revocation, a shutdown), maybe also past its deadline
        except TimeoutError:
            return Response(0, _EMPTY, b"", f"timed out after {timeout:g}s")
        except aiohttp.ClientError as exc:
            why = _refusal(exc)
            if why is not None:
                return Response(0, _EMPTY, b"", str(why), refused=True)
            return Response(0, _EMPTY, b"", f"{type(exc).__name__}: {exc}")
        except OSError as exc:
            return Response(0, _EMPTY, b"", f"{type(exc).__name__}: {exc}")
        finally:
            if deadlines.end(task, timeout):
                task.uncancel()  # the deadline passed as the request ended: its cancellation never landed

    def _check_literal(self, url: str) -> UrlRefused | None:
        """aiohttp does not resolve an IP-literal host, so the guard checks those here (cached per URL:
        a runtime dispatches to a handful of URLs; `post` looks the cache up first)."""
        host = URL(url).host or ""
        found: UrlRefused | None = None
        try:
            _address(host)
        except ValueError:
            pass  # a name: the resolver checks what it resolves to
        else:
            try:
                self.url_policy.check(host, host)
            except UrlRefused as exc:
                found = exc
        if len(self._literal) < 10_000:
            self._literal[url] = found
        return found


class GatewayNotConfigured(RuntimeError):
    """A trigger names a function by name but the runtime has no gateway URL."""
