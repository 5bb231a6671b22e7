"""JetStream → HTTP dispatch throughput: eventbus (ordering none/key) against a raw ceiling, one run.

The raw ceiling is a bare nats-py pull consumer fetching batches of up to `concurrency` messages and
posting each with aiohttp at the same concurrency, acking after the response, with no CloudEvents
decoding, retries or ordering. The function is nginx answering 204 when installed, else a minimal
aiohttp app in another process (helpers shared with bench/kafka_dispatch.py).

    python bench/nats_dispatch.py [--events 50000] [--concurrency 64]

Needs NATS with JetStream: EVENTBUS_NATS_URL or .services.env (scripts/services up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import nats  # noqa: E402
from nats.aio.msg import Msg  # noqa: E402
from nats.js.api import ConsumerConfig, StorageType  # noqa: E402

from bench.kafka_dispatch import (  # noqa: E402
    free_port,
    measure_eventbus,
    pct,
    service_address,
    start_function,
    wait_port,
)
from eventbus.runtime import RuntimeConfig  # noqa: E402


def nats_url() -> str:
    return service_address("EVENTBUS_NATS_URL", "NATS")


async def make_stream(url: str, events: int) -> tuple[str, str]:
    name = f"BENCH-{uuid.uuid4().hex[:8]}"
    subject = f"bench.{name.lower()}.>"
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=name, subjects=[subject], storage=StorageType.FILE)
    pending = []
    for i in range(events):
        headers = {"ce-specversion": "1.0", "ce-id": f"b-{i}", "ce-source": "/bench", "ce-type": "bench.event",
                   "ce-datacontenttype": "application/json", "ce-partitionkey": f"k{i % 97}"}
        pending.append(js.publish(f"bench.{name.lower()}.s{i % 8}", json.dumps({"i": i}).encode(),
                                  headers=headers))
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)
    await nc.close()
    return name, subject


async def raw_ceiling(url: str, stream: str, subject: str, fn_url: str, events: int,
                      concurrency: int) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable=f"raw-{uuid.uuid4().hex[:6]}", stream=stream,
                                  config=ConsumerConfig(ack_wait=60, max_ack_pending=10_000))
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    done = 0
    finished = asyncio.Event()
    start: float | None = None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(msg: Msg) -> None:
            nonlocal done
            try:
                t0 = time.perf_counter()
                async with session.post(fn_url, data=msg.data, headers=msg.headers) as r:
                    await r.read()
                lat.append(time.perf_counter() - t0)
                await msg.ack()
            finally:
                sem.release()
                done += 1
                if done >= events:
                    finished.set()

        tasks: set[asyncio.Task[None]] = set()
        while not finished.is_set():
            free = max(1, sem._value)
            try:
                msgs = await sub.fetch(free, timeout=0.2)
            except TimeoutError:  # nats.errors.TimeoutError, or a bare one from the batch path
                continue
            for msg in msgs:
                if start is None:
                    start = time.perf_counter()
                await sem.acquire()
                t = asyncio.create_task(post(msg))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
        elapsed = time.perf_counter() - (start or time.perf_counter())
    await nc.flush()
    await nc.close()
    return {"eps": events / elapsed, "p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000}


async def eventbus_run(url: str, stream: str, subject: str, gateway: str, events: int, concurrency: int,
                       ordering: str) -> dict[str, float]:
    source = f"{{nats: {{subject: '{subject}', ordering: {ordering}, jetstream: {{stream: {stream}}}}}}}"
    return await measure_eventbus(RuntimeConfig(gateway=gateway, nats=url, grace=5), source, events, concurrency)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="repeat and report medians")
    args = ap.parse_args()
    url = nats_url()
    port = free_port()
    runs = ("raw", "none", "key")
    with tempfile.TemporaryDirectory() as tmp:
        proc, kind = start_function(port, Path(tmp))
        try:
            await wait_port(port)
            gateway = f"http://127.0.0.1:{port}"
            print(f"function: {kind} on {gateway}; {args.events} events on JetStream (8 subjects), "
                  f"concurrency {args.concurrency}, {args.rounds} round(s)")
            stream, subject = await make_stream(url, args.events)
            results: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                results.setdefault("raw", []).append(
                    await raw_ceiling(url, stream, subject, gateway + "/bench/fn", args.events, args.concurrency))
                for ordering in runs[1:]:
                    results.setdefault(ordering, []).append(
                        await eventbus_run(url, stream, subject, gateway, args.events, args.concurrency, ordering))
            nc = await nats.connect(url)
            await nc.jetstream().delete_stream(stream)
            await nc.close()
        finally:
            proc.terminate()
            proc.wait(10)
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("eps", "p50", "p99")} for k, rs in results.items()}
    raw = med["raw"]["eps"]
    print(f"{'run':<22}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs raw':>8}")
    for k in runs:
        r = med[k]
        label = "raw ceiling" if k == "raw" else f"eventbus ordering={k}"
        print(f"{label:<22}{r['eps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['eps'] / raw:>8.2f}")
    print(f"ratio none/raw = {med['none']['eps'] / raw:.2f} (target >= 0.70)")


if __name__ == "__main__":
    asyncio.run(main())
