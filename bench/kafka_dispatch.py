"""Kafka → HTTP dispatch throughput: eventbus (ordering none/key/partition) against a raw ceiling, one run.

The raw ceiling is a bare aiokafka consumer posting each record with aiohttp at the same concurrency,
with no offset tracking, no retries and no CloudEvents decoding. The function is nginx answering 204
when nginx is installed, else a minimal aiohttp app in another process.

    python bench/kafka_dispatch.py [--events 100000] [--partitions 8] [--concurrency 64]

Needs Kafka: EVENTBUS_KAFKA_BOOTSTRAP or .services.env (scripts/services up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from connectors.gateway import GatewayClient, Response  # noqa: E402
from eventbus.runtime import Runtime, RuntimeConfig  # noqa: E402
from schemas.loader import parse_triggers  # noqa: E402
from triggers.metrics import Metrics  # noqa: E402


def service_address(var: str, what: str) -> str:
    """A server address from the environment, else from the `.services.env` that scripts/services writes."""
    if os.environ.get(var):
        return os.environ[var]
    env = REPO / ".services.env"
    if env.exists():
        for line in env.read_text().splitlines():
            if f"{var}=" in line:
                return line.split("=", 1)[1].strip().strip('"')
    sys.exit(f"no {what}: run scripts/services up (or set {var})")


def bootstrap() -> str:
    return service_address("EVENTBUS_KAFKA_BOOTSTRAP", "Kafka")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


AIOHTTP_FUNCTION = """
import sys
from aiohttp import web
async def h(request):
    await request.read()
    return web.Response(status=204)
app = web.Application()
app.router.add_route("*", "/{tail:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_function(port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx:
        conf = workdir / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; client_body_temp_path {workdir}/body; proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fcgi; uwsgi_temp_path {workdir}/uwsgi; scgi_temp_path {workdir}/scgi;
  keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 204; }} }} }}
""")
        return subprocess.Popen([nginx, "-c", str(conf), "-p", str(workdir)]), "nginx"
    return subprocess.Popen([sys.executable, "-c", AIOHTTP_FUNCTION, str(port)]), "aiohttp"


async def wait_port(port: int, attempts: int = 100) -> None:
    """Wait until something listens on `port` (attempts x 50 ms)."""
    for _ in range(attempts):
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {attempts * 0.05:g}s")


async def make_topic(bs: str, partitions: int, events: int) -> str:
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bs)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bs, linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    for _ in range(100):
        if len(await producer.partitions_for(topic) or ()) == partitions:
            break
        await asyncio.sleep(0.1)
    futs = []
    for i in range(events):
        headers = [("ce_specversion", b"1.0"), ("ce_id", f"b-{i}".encode()), ("ce_source", b"/bench"),
                   ("ce_type", b"bench.event"), ("content-type", b"application/json")]
        futs.append(await producer.send(topic, json.dumps({"i": i}).encode(), key=f"k{i % 97}".encode(),
                                        headers=headers))
    await asyncio.gather(*futs)
    await producer.stop()
    return topic


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def raw_ceiling(bs: str, topic: str, url: str, events: int, concurrency: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    done = 0
    finished = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(value: bytes, headers: list[tuple[str, bytes]]) -> None:
            nonlocal done
            try:
                hdrs = {k.replace("ce_", "ce-"): v.decode() for k, v in headers}
                t0 = time.perf_counter()
                async with session.post(url, data=value, headers=hdrs) as r:
                    await r.read()
                lat.append(time.perf_counter() - t0)
            finally:
                sem.release()
                done += 1
                if done >= events:
                    finished.set()

        start = None
        tasks = set()
        while not finished.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            for recs in batch.values():
                for rec in recs:
                    if start is None:
                        start = time.perf_counter()
                    await sem.acquire()
                    t = asyncio.create_task(post(rec.value, list(rec.headers)))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
        elapsed = time.perf_counter() - (start or time.perf_counter())
    await consumer.stop()
    return {"eps": events / elapsed, "p50": pct(lat, 0.5) * 1000, "p99": pct(lat, 0.99) * 1000}


class TimedGateway(GatewayClient):
    def __init__(self, gateway: str) -> None:
        super().__init__(gateway)
        self.lat: list[float] = []

    async def post(self, url: str, headers: Any, body: bytes, *, timeout: float) -> Response:
        t0 = time.perf_counter()
        r = await super().post(url, headers, body, timeout=timeout)
        self.lat.append(time.perf_counter() - t0)
        return r


async def measure_eventbus(config: RuntimeConfig, source: str, events: int, concurrency: int) -> dict[str, float]:
    """Run one trigger with `source` (a flow-style YAML mapping) in-process until `events` are delivered."""
    assert config.gateway is not None
    name = f"b{uuid.uuid4().hex[:6]}"
    spec = f"""
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}, namespace: bench}}
spec:
  source: {source}
  function: {{name: fn}}
  delivery: {{concurrency: {concurrency}}}
"""
    registry = CollectorRegistry()
    rt = Runtime(config, metrics=Metrics(registry))
    timed = TimedGateway(config.gateway)
    rt.gateway = timed
    await rt.start(parse_triggers(spec, "bench.yaml"))
    key = {"trigger": f"bench/{name}"}
    start = None
    while True:
        got = registry.get_sample_value("eventbus_events_delivered_total", key) or 0
        if start is None and got > 0:
            start = time.perf_counter() - 0.001
        if got >= events:
            break
        await asyncio.sleep(0.02)  # collecting the registry costs CPU in the measured loop: poll gently
    elapsed = time.perf_counter() - (start or 0)
    await rt.stop()
    return {"eps": events / elapsed, "p50": pct(timed.lat, 0.5) * 1000, "p99": pct(timed.lat, 0.99) * 1000}


async def eventbus_run(bs: str, topic: str, gateway: str, events: int, concurrency: int,
                       ordering: str) -> dict[str, float]:
    source = f"{{kafka: {{topics: [{topic}], ordering: {ordering}, initialOffset: earliest}}}}"
    return await measure_eventbus(RuntimeConfig(gateway=gateway, kafka=bs, grace=5), source, events, concurrency)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1, help="repeat and report medians")
    args = ap.parse_args()
    bs = bootstrap()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, kind = start_function(port, Path(tmp))
        try:
            await wait_port(port)
            gateway = f"http://127.0.0.1:{port}"
            print(f"function: {kind} on {gateway}; {args.events} events, {args.partitions} partitions, "
                  f"concurrency {args.concurrency}, {args.rounds} round(s)")
            topic = await make_topic(bs, args.partitions, args.events)
            results: dict[str, list[dict[str, float]]] = {}
            for _ in range(args.rounds):
                results.setdefault("raw", []).append(
                    await raw_ceiling(bs, topic, gateway + "/bench/fn", args.events, args.concurrency))
                for ordering in ("none", "key", "partition"):
                    results.setdefault(ordering, []).append(
                        await eventbus_run(bs, topic, gateway, args.events, args.concurrency, ordering))
        finally:
            proc.terminate()
            proc.wait(10)
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("eps", "p50", "p99")} for k, rs in results.items()}
    raw = med["raw"]["eps"]
    print(f"{'run':<22}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs raw':>8}")
    for k in ("raw", "none", "key", "partition"):
        r = med[k]
        label = "raw ceiling" if k == "raw" else f"eventbus ordering={k}"
        print(f"{label:<22}{r['eps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['eps'] / raw:>8.2f}")
    print(f"ratio none/raw = {med['none']['eps'] / raw:.2f} (target >= 0.70)")


if __name__ == "__main__":
    asyncio.run(main())
