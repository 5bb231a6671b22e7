"""The gateway client against a real HTTP server: its request timeout (`connectors.deadlines`: a slow function
times out on time, whatever other timeouts are in flight; only that cancellation becomes a timeout) and what
a function sees of it (its User-Agent, no cookies)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from connectors.gateway import USER_AGENT, GatewayClient
from tests.integration.support import serve


@asynccontextmanager
async def _gateway(seen: list[web.Request] | None = None) -> AsyncIterator[tuple[GatewayClient, str]]:
    """A gateway client and a real function server: POST /sleep/<seconds> answers 204 after that long (a
    hung function when long enough), POST /cookie answers 204 with a Set-Cookie; every request is appended
    to `seen`."""

    async def set_cookie(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request)
        resp = web.Response(status=204)
        resp.set_cookie("session", "tenant-a-secret", path="/")
        return resp

    async def handler(request: web.Request) -> web.Response:
        if seen is not None:
            seen.append(request)
        await asyncio.sleep(float(request.match_info["s"]))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/sleep/{s}", handler)
    app.router.add_post("/cookie", set_cookie)
    runner, url = await serve(app)
    gw = GatewayClient(url)
    try:
        yield gw, url
    finally:
        await gw.close()
        await runner.cleanup()


async def test_a_slow_function_times_out_at_its_deadline_and_the_task_stays_usable() -> None:
    async with _gateway() as (gw, url):
        t0 = time.monotonic()
        r = await gw.post(url + "/sleep/2.5", {}, b"x", timeout=0.2)
        took = time.monotonic() - t0
        assert r.status == 0 and r.error == "timed out after 0.2s", r
        assert 0.19 <= took < 1.5, took
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # our cancellation was taken back
        await asyncio.sleep(0.01)  # and no cancellation is left pending for the next await
        ok = await gw.post(url + "/sleep/0", {}, b"x", timeout=5)
        assert ok.status == 204
        assert len(gw._deadlines) == 0


async def test_timeouts_of_different_lengths_each_expire_on_time() -> None:
    """A short timeout started after a long one still fires first (one queue per length)."""
    async with _gateway() as (gw, url):
        t0 = time.monotonic()

        async def timed(seconds: float, timeout: float) -> tuple[int, float]:
            r = await gw.post(url + f"/sleep/{seconds}", {}, b"x", timeout=timeout)
            return r.status, time.monotonic() - t0

        long = asyncio.create_task(timed(2.5, 1.5))
        await asyncio.sleep(0.05)
        short = asyncio.create_task(timed(2.5, 0.2))
        quick = asyncio.create_task(timed(0, 0.2))  # answers in time: not a timeout
        (ls, lt), (ss, st), (qs, _) = await asyncio.gather(long, short, quick)
        assert (ls, ss, qs) == (0, 0, 204)
        assert 0.2 <= st < 1.0, st
        assert 1.5 <= lt < 3.0, lt
        assert len(gw._deadlines) == 0


async def test_an_outside_cancellation_is_not_turned_into_a_timeout() -> None:
    """A revocation or shutdown cancels a request in flight: that must propagate, never read as an answer."""
    seen: list[web.Request] = []
    async with _gateway(seen) as (gw, url):
        task = asyncio.create_task(gw.post(url + "/sleep/2.5", {}, b"x", timeout=0.3))
        while not seen:
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        else:
            raise AssertionError(f"the cancellation was swallowed: {task.result()!r}")
        assert len(gw._deadlines) == 0
        await asyncio.sleep(0.4)  # past the deadline: nothing fires on the finished task


async def test_dispatches_name_eventbus_as_their_user_agent() -> None:
    seen: list[web.Request] = []
    async with _gateway(seen) as (gw, url):
        r = await gw.post(url + "/sleep/0", {"ce-id": "1"}, b"x", timeout=5)
        assert r.status == 204
        assert seen[0].headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("eventbus")
        assert "aiohttp" not in seen[0].headers["User-Agent"]


async def test_a_cookie_one_function_sets_is_never_sent_to_another() -> None:
    """Every function sits behind the gateway's one host: a Set-Cookie from one must not ride along on the
    next event to another (a client-side cookie jar would send it to every path of the host)."""
    seen: list[web.Request] = []
    async with _gateway(seen) as (gw, url):
        url = url.replace("127.0.0.1", "localhost")  # a name: a cookie jar keeps no cookie of an IP address
        r = await gw.post(url + "/cookie", {}, b"x", timeout=5)
        assert r.status == 204 and "tenant-a-secret" in r.headers.get("Set-Cookie", "")
        for path in ("/sleep/0", "/cookie"):
            assert (await gw.post(url + path, {}, b"x", timeout=5)).status == 204
        assert [req.path for req in seen] == ["/cookie", "/sleep/0", "/cookie"]
        assert [req.headers.get("Cookie") for req in seen] == [None, None, None]
