"""The gateway client against a real HTTP server: a function's whole answer comes back, however it is chunked."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from connectors.gateway import MAX_RESPONSE_BYTES, GatewayClient
from tests.integration.support import serve


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/{tail:.*}", handler)
    return await serve(app)


async def test_a_body_streamed_in_many_chunks_arrives_whole() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        for i in range(0, len(body), 10_000):
            await resp.write(body[i:i + 10_000])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    runner, url = await _serve(chunked)
    gw = GatewayClient(url)
    try:
        r = await gw.post(url + "/ns/fn", {"ce-id": "1"}, b"x", timeout=10)
        assert r.status == 200 and r.body == body
    finally:
        await gw.close()
        await runner.cleanup()


async def test_a_body_over_the_limit_is_cut_at_the_limit() -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        await resp.prepare(request)
        chunk = b"z" * (1 << 20)
        for _ in range(MAX_RESPONSE_BYTES // len(chunk) + 2):
            await resp.write(chunk)
        await resp.write_eof()
        return resp

    runner, url = await _serve(huge)
    gw = GatewayClient(url)
    try:
        r = await gw.post(url + "/ns/fn", {}, b"", timeout=30)
        assert r.status == 200 and len(r.body) == MAX_RESPONSE_BYTES
    finally:
        await gw.close()
        await runner.cleanup()
