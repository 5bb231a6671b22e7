"""Benchmark: requests/s of `POST /topics/<name>` into JetStream through the eventbus ingress, against a bare
aiohttp handler that decodes and publishes the same way (binary CloudEvent -> JetStream publish with ack).

Each server runs in its own child process (same layout for both); the load client (aiohttp, N concurrent
connections) runs here. Rounds alternate between the two servers in the same run; medians and the ratio
are printed. Needs a NATS server with JetStream: EVENTBUS_NATS_URL (`source .services.env`).

    .venv/bin/python bench/http_ingress.py [--rounds 5] [--seconds 5] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import nats
from aiohttp import web
from nats.js.api import StorageType, StreamConfig

ROOT = Path(__file__).resolve().parents[1]
STREAM = "BENCH_INGRESS"
SUBJECT = "bench.ingress"

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.kafka_dispatch import free_port, wait_port  # noqa: E402


async def serve_bare(port: int, nats_url: str) -> None:
    from schemas.http_binding import from_http
    from schemas.nats_binding import to_nats_binary

    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def handle(request: web.Request) -> web.Response:
        events = from_http(request.headers, await request.read())
        for ev in events:
            headers, payload = to_nats_binary(ev)
            await js.publish(request.match_info["name"], payload, headers=headers, timeout=5)
        return web.json_response({"accepted": [e.id for e in events]}, status=202)

    app = web.Application(client_max_size=1 << 20)
    app.router.add_post("/topics/{name}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def serve_ingress(port: int, nats_url: str) -> None:
    from eventbus.runtime import Runtime, RuntimeConfig

    rt = Runtime(RuntimeConfig(nats=nats_url, http_port=port))
    await rt.start([])
    await asyncio.Event().wait()


async def load(url: str, seconds: float, concurrency: int) -> float:
    body = b'{"order": 1, "items": ["a", "b"]}'
    n = 0
    deadline = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker(w: int) -> None:
            nonlocal n
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                headers = {"ce-specversion": "1.0", "ce-id": f"{w}-{i}", "ce-source": "/bench",
                           "ce-type": "bench.t", "Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 202:
                        raise RuntimeError(f"{url}: {r.status}")
                n += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return n / (time.perf_counter() - started)


def start_server(kind: str, port: int, nats_url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port), "--nats", nats_url],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)



async def main(args: argparse.Namespace) -> None:
    nats_url = os.environ.get("EVENTBUS_NATS_URL", "nats://127.0.0.1:4222")
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    try:
        await js.delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(StreamConfig(name=STREAM, subjects=[SUBJECT], storage=StorageType.FILE, max_msgs=200_000))
    ports = {"ingress": free_port(), "bare": free_port()}
    procs = {k: start_server(k, p, nats_url) for k, p in ports.items()}
    try:
        for p in ports.values():
            await wait_port(p, attempts=200)
        results: dict[str, list[float]] = {"ingress": [], "bare": []}
        for kind in results:  # warm-up
            await load(f"http://127.0.0.1:{ports[kind]}/topics/{SUBJECT}", 1.0, args.concurrency)
        for r in range(args.rounds):
            for kind in (("ingress", "bare") if r % 2 == 0 else ("bare", "ingress")):
                rps = await load(f"http://127.0.0.1:{ports[kind]}/topics/{SUBJECT}", args.seconds, args.concurrency)
                results[kind].append(rps)
                print(f"round {r + 1} {kind:<8} {rps:9.0f} req/s", flush=True)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"median ingress {med['ingress']:.0f} req/s, bare aiohttp+JetStream {med['bare']:.0f} req/s, "
              f"ratio ingress/bare {med['ingress'] / med['bare']:.2f} "
              f"(concurrency {args.concurrency}, {args.rounds}x{args.seconds:g}s)")
        info = await js.stream_info(STREAM)
        print(f"stream {STREAM}: {info.state.messages} messages stored")
    finally:
        for p in procs.values():
            p.terminate()
            p.wait(10)
        await js.delete_stream(STREAM)
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--serve", choices=["ingress", "bare"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--nats")
    a = parser.parse_args()
    if a.serve == "bare":
        asyncio.run(serve_bare(a.port, a.nats))
    elif a.serve == "ingress":
        asyncio.run(serve_ingress(a.port, a.nats))
    else:
        asyncio.run(main(a))
