"""A development gateway for `eventbus up --functions FILE`: serves the `async def name(event)` handlers of a
Python file at `{gateway}/{namespace}/{name}`, in the same process on its own port.

Why: a first-time user should see an event reach code they wrote without deploying a FaaS platform. The
runtime talks to it exactly as to the real gateway (HTTP, CloudEvents binary mode), so retries,
dead letters and replies behave as they will in production. Any namespace maps to the same handlers.

A handler gets a `schemas.cloudevent.CloudEvent` (`.type`, `.id`, `.attributes`, `.data` bytes). Its return
value is the answer: None -> 204; bytes -> 200 octet-stream; str -> 200 text/plain; a CloudEvent -> 200 in
binary mode (a reply event); anything else -> 200 JSON. An exception is a 500 (the runtime retries).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from connectors.http_ingress import decode_request
from schemas import http_binding
from schemas.cloudevent import CloudEvent
from schemas.errors import SchemaError
from schemas.trigger import Trigger

log = logging.getLogger("eventbus.functions")

Function = Callable[[CloudEvent], Awaitable[Any]]


class FunctionsError(RuntimeError):
    """The functions file cannot be loaded or defines no `async def` handler."""


def load_functions(path: str | Path) -> dict[str, Function]:
    """The public `async def` functions defined in the file (imported ones are skipped)."""
    file = Path(path).resolve()
    if not file.is_file():
        raise FunctionsError(f"{path}: no such file")
    name = f"eventbus_functions_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise FunctionsError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise FunctionsError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
    found: dict[str, Function] = {
        n: f for n, f in vars(module).items()
        if not n.startswith("_") and inspect.iscoroutinefunction(f) and getattr(f, "__module__", None) == name
    }
    if not found:
        raise FunctionsError(f"{path}: defines no `async def name(event)` function")
    return found


class UnknownFunctions(FunctionsError):
    """Triggers name functions the file does not define."""


def check_function_names(triggers: list[Trigger], functions: dict[str, Function], path: str | Path) -> None:
    """Refuse triggers naming a function the file does not define: their events would be accepted, then
    answered 404 by this gateway and lost to the dead-letter sink or dropped."""
    unknown = sorted({f"{t.key} -> {t.spec.function.name}" for t in triggers
                      if t.spec.function.name is not None and t.spec.function.name not in functions})
    if unknown:
        raise UnknownFunctions(f"{path} does not define the function(s) these triggers name: {', '.join(unknown)}; "
                             f"it defines: {', '.join(sorted(functions))}")


def answer(result: Any) -> web.Response:
    if result is None:
        return web.Response(status=204)
    if isinstance(result, CloudEvent):
        headers, body = http_binding.to_binary(result)
        return web.Response(status=200, headers=headers, body=body)
    if isinstance(result, bytes):
        return web.Response(status=200, body=result, content_type="application/octet-stream")
    if isinstance(result, str):
        return web.Response(status=200, text=result)
    return web.Response(status=200, body=json.dumps(result, default=str).encode(), content_type="application/json")


class DevGateway:
    def __init__(self, functions: dict[str, Function], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.functions = functions
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/{namespace}/{name}", self._handle)
        # the runtime has drained (within --grace) before this stops: a function still running then is
        # abandoned at once, not waited for (aiohttp's default would wait 60 s)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        self.port = int(runner.addresses[0][1])
        self._runner = runner
        log.info("dev gateway serving functions", extra={"url": self.url, "functions": sorted(self.functions)})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        fn = self.functions.get(name)
        if fn is None:
            return web.json_response({"error": f"no function {name!r}; have {sorted(self.functions)}"}, status=404)
        body = await request.read()
        try:
            events = decode_request(request.headers, body, host=request.host, path=request.path)
        except SchemaError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        if len(events) != 1:
            return web.json_response({"error": "one event per call"}, status=400)
        try:
            result = await fn(events[0])
        except Exception:
            log.exception("function raised", extra={"function": name, "event_id": events[0].id})
            return web.json_response({"error": f"function {name} raised"}, status=500)
        return answer(result)
