"""The gateway session's request class sends exactly the headers aiohttp's own would, in the same order."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from connectors.gateway import USER_AGENT, GatewayClient
from connectors.gateway_request import CopiedHeadersRequest
from tests.integration.support import serve

Seen = list[tuple[bytes, bytes]]


async def _recorder() -> tuple[web.AppRunner, str, list[Seen]]:
    seen: list[Seen] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(list(request.raw_headers))
        await request.read()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    runner, url = await serve(app)
    return runner, url, seen


async def _sent(request_class: type[aiohttp.ClientRequest], url: str, seen: list[Seen], **kw: Any) -> Seen:
    async with aiohttp.ClientSession(headers={"User-Agent": "ua/1"}, request_class=request_class) as session:
        async with session.post(url, data=b"{}", allow_redirects=False, **kw) as r:
            assert r.status == 204
    return seen.pop()


@pytest.mark.parametrize("headers", [
    None,
    {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "Content-Type": "application/json"},
    {"User-Agent": "caller/2", "Accept": "text/plain", "X-Repeated": "a"},
    CIMultiDict([("X-Repeated", "a"), ("x-repeated", "b"), ("ce-id", "2")]),
    {"Host": "function.example:8080", "ce-id": "3"},
    {"HOST": "other.example", "ce-id": "4"},
])
async def test_the_same_headers_in_the_same_order_as_aiohttps_request(headers: Any) -> None:
    runner, url, seen = await _recorder()
    try:
        for target in (url + "/fn", url.replace("127.0.0.1", "localhost") + "/fn"):
            ours = await _sent(CopiedHeadersRequest, target, seen, headers=headers)
            theirs = await _sent(aiohttp.ClientRequest, target, seen, headers=headers)
            assert ours == theirs
            assert ours[0][0].lower() == b"host"
    finally:
        await runner.cleanup()


async def test_the_gateway_client_sends_every_header_with_the_computed_host() -> None:
    runner, url, seen = await _recorder()
    gw = GatewayClient(url)
    try:
        r = await gw.post(url + "/ns/fn", {"ce-id": "9", "ce-type": "t", "Content-Type": "text/plain"}, b"x",
                          timeout=10)
        assert r.status == 204
        got = seen.pop()
        port = url.rsplit(":", 1)[1]
        assert got[0] == (b"Host", f"127.0.0.1:{port}".encode())
        sent = {k.lower(): v for k, v in got}
        assert sent[b"ce-id"] == b"9" and sent[b"ce-type"] == b"t" and sent[b"content-type"] == b"text/plain"
        assert sent[b"user-agent"] == USER_AGENT.encode() and sent[b"content-length"] == b"1"
    finally:
        await gw.close()
        await runner.cleanup()
