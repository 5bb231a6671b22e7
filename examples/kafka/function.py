"""A stand-in for the gateway and a function: prints every CloudEvent it receives (HTTP binary mode)."""

import sys

from aiohttp import web


async def handle(request: web.Request) -> web.Response:
    body = await request.read()
    attrs = {k[3:]: v for k, v in request.headers.items() if k.lower().startswith("ce-")}
    print(f"{request.path}: {attrs} data={body.decode(errors='replace')}", flush=True)
    return web.Response(status=204)


app = web.Application()
app.router.add_route("POST", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 9000, print=None)
