"""Cron lateness under load: a 1-second cron trigger while a Kafka trigger dispatches at full speed.

    source .services.env && .venv/bin/python bench/cron_lateness.py [--ticks 300]

One runtime (this process) runs both triggers, with the cron lease in the real NATS KV bucket. A producer
process keeps the Kafka topic full, so the Kafka trigger never idles; its function and the cron function
are two separate receiver processes (so receipt times are not distorted by the loaded loop). Lateness is
the cron receiver's receipt time minus the tick's scheduled time. Prints p50/p99/max lateness, the busy
trigger's dispatch rate, and the count of missed and doubled ticks. Target: p99 < 10 ms, none missed,
none doubled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- child modes ------------------------------------------------------------------------------------

async def serve(port: int, out: str | None) -> None:
    """A receiver: 204 to everything; with `out`, append `<ce-id> <receipt time>` lines."""
    from aiohttp import web

    sink = open(out, "a", buffering=1) if out else None  # noqa: ASYNC230

    async def handle(request: web.Request) -> web.Response:
        now = time.time()
        await request.read()
        if sink is not None:
            sink.write(f"{request.headers.get('ce-id', '')} {now:.6f}\n")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


async def produce(bootstrap: str, topic: str) -> None:
    """Keep producing small records as fast as the broker takes them."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    body = b'{"n":1}'
    while True:
        futs = [await producer.send(topic, body) for _ in range(2000)]
        await asyncio.gather(*futs)


# --- the benchmark ----------------------------------------------------------------------------------

async def bench(ticks: int, idle: bool = False) -> int:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from prometheus_client import CollectorRegistry

    from eventbus.runtime import Runtime, RuntimeConfig
    from schemas.loader import parse_triggers
    from triggers.metrics import Metrics

    bootstrap = os.environ.get("EVENTBUS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    nats_url = os.environ.get("EVENTBUS_NATS_URL")
    name = f"bench-{uuid.uuid4().hex[:6]}"
    topic = f"{name}-busy"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 4, 1)])
    await admin.close()

    log = Path(f"/tmp/{name}-cron.txt")
    cron_port, busy_port = free_port(), free_port()
    me = [sys.executable, __file__]
    children = [
        subprocess.Popen([*me, "--serve", str(cron_port), "--out", str(log)]),  # noqa: ASYNC220
        subprocess.Popen([*me, "--serve", str(busy_port)]),  # noqa: ASYNC220
    ]
    if not idle:
        children.append(subprocess.Popen([*me, "--produce", topic, "--bootstrap", bootstrap]))  # noqa: ASYNC220
    await asyncio.sleep(3.0)  # receivers up, topic filling
    spec = f"""
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}, namespace: bench}}
spec:
  source: {{cron: {{schedule: "* * * * * *"}}}}
  function: {{url: "http://127.0.0.1:{cron_port}/cron"}}
---
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: {name}-busy, namespace: bench}}
spec:
  source: {{kafka: {{topics: [{topic}], ordering: none}}}}
  function: {{url: "http://127.0.0.1:{busy_port}/busy"}}
  delivery: {{concurrency: 64}}
"""
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(kafka=bootstrap, nats=nats_url), metrics=Metrics(registry))
    started = time.time()
    try:
        triggers = parse_triggers(spec, "bench.yaml")
        await rt.start(triggers[:1] if idle else triggers)
        await asyncio.sleep(ticks + 1.5)
    finally:
        busy = registry.get_sample_value("eventbus_events_delivered_total", {"trigger": f"bench/{name}-busy"})
        buckets = {le: registry.get_sample_value("eventbus_cron_lateness_seconds_bucket",
                                                 {"trigger": f"bench/{name}", "le": le})
                   for le in ("0.001", "0.005", "0.01", "0.05", "+Inf")}
        elapsed = time.time() - started
        await rt.stop()
        for c in children:
            c.terminate()
            c.wait(10)

    rows = [line.split() for line in log.read_text().splitlines() if line.strip()]  # noqa: ASYNC240
    late: list[float] = []
    seen: Counter[str] = Counter()
    for cid, at in rows:
        stamp = cid.rsplit("/", 1)[1]
        scheduled = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
        seen[stamp] += 1
        if seen[stamp] == 1:
            late.append(float(at) - scheduled)
    stamps = sorted(datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in seen)
    expected = int(stamps[-1] - stamps[0]) + 1 if stamps else 0
    missed = expected - len(stamps)
    doubled = sum(c - 1 for c in seen.values())
    late.sort()

    def pct(p: float) -> float:
        return late[min(len(late) - 1, int(p * len(late)))] * 1000

    print(json.dumps({
        "ticks_fired": len(stamps), "ticks_expected": expected, "missed": missed, "doubled": doubled,
        "lateness_ms": {"p50": round(pct(0.50), 3), "p99": round(pct(0.99), 3), "max": round(late[-1] * 1000, 3)},
        "busy_trigger_dispatches_per_s": round((busy or 0) / elapsed),
        "lock": "nats-kv" if nats_url else "in-process",
        "dispatch_start_lateness_buckets": buckets,
    }))
    ok = pct(0.99) < 10 and missed == 0 and doubled == 0 and len(stamps) >= ticks - 1
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument("--idle", action="store_true", help="no busy trigger: the baseline")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--produce", help=argparse.SUPPRESS)
    p.add_argument("--bootstrap", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        asyncio.run(serve(a.serve, a.out))
        return 0
    if a.produce:
        asyncio.run(produce(a.bootstrap, a.produce))
        return 0
    return asyncio.run(bench(a.ticks, a.idle))


if __name__ == "__main__":
    sys.exit(main())
