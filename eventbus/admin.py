"""The admin HTTP server: health, readiness and Prometheus metrics (aiohttp, on the runtime's loop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


def admin_routes(ready: Callable[[], bool], registry: CollectorRegistry = REGISTRY,
                 details: Callable[[], dict[str, Any]] | None = None) -> list[web.RouteDef]:
    """`/readyz` is 503 unless `ready()`; its body adds `details()` (what is not ready, what is degraded),
    so an operator sees why without reading the logs."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = ready()
        body: dict[str, Any] = {"ready": ok}
        if details is not None:
            body.update(details())
        return web.json_response(body, status=200 if ok else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/healthz", healthz), web.get("/readyz", readyz), web.get("/metrics", metrics)]


async def start_admin(port: int, routes: list[web.RouteDef], host: str = "0.0.0.0") -> web.AppRunner:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
