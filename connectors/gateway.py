"""The HTTP client that reaches functions through the platform's gateway (aiohttp: the dispatch hot path)."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

DEFAULT_URL_TEMPLATE = "{gateway}/{namespace}/{name}"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Response:
    """What one dispatch attempt came back with. `status` 0 means no HTTP answer (see `error`)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    error: str | None = None

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


class GatewayClient:
    """One pooled aiohttp session shared by every trigger of a runtime."""

    def __init__(self, gateway: str | None, *, url_template: str = DEFAULT_URL_TEMPLATE, limit: int = 0) -> None:
        self.gateway = gateway.rstrip("/") if gateway else None
        self.url_template = url_template
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def function_url(self, *, name: str, namespace: str) -> str:
        if self.gateway is None:
            raise GatewayNotConfigured(
                f"function {namespace}/{name} is reached through the gateway, but no gateway is configured "
                "(pass --gateway URL or set function.url)"
            )
        return self.url_template.format(gateway=self.gateway, namespace=namespace, name=name)

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._limit, limit_per_host=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout: float) -> Response:
        """POST once; connection errors and timeouts become a status-0 Response, never an exception."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        client_timeout = self._timeouts.get(timeout)
        if client_timeout is None:
            client_timeout = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=client_timeout, allow_redirects=False
            ) as resp:
                data = await resp.content.read(MAX_RESPONSE_BYTES)
                return Response(resp.status, resp.headers, data)
        except TimeoutError:
            return Response(0, _EMPTY, b"", f"timed out after {timeout:g}s")
        except aiohttp.ClientError as exc:
            return Response(0, _EMPTY, b"", f"{type(exc).__name__}: {exc}")
        except asyncio.CancelledError:
            raise
        except OSError as exc:
            return Response(0, _EMPTY, b"", f"{type(exc).__name__}: {exc}")


class GatewayNotConfigured(RuntimeError):
    """A trigger names a function by name but the runtime has no gateway URL."""
