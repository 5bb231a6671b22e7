"""How fast does an autoscaler hear about work? Scaling-signal latency and the lag watcher's own cost.

1. Activation: over `--trials` idle Kafka triggers (one each, so no trial waits for the previous one to
   cool down), the time from producing one event until (a) the push receiver gets the `active` hint
   CloudEvent and (b) KEDA's `StreamIsActive` stream says `true`. p50/p99. Target p99 < 100 ms.
2. Right-sizing: a burst of `--burst` events to an idle trigger whose function is held (the lag stays):
   the time until `GET /scaling/...` shows `desiredReplicas = ceil(burst / lagThreshold)`. Target < 1 s.
3. Cost: `--watch-triggers` Kafka triggers watched by one hint board (no consumers): broker admin calls
   per second and the CPU it takes, against the same process idle for the same time. Target < 2 % of a core.

Printed beside KEDA's defaults (30 s polling + 15 s HPA sync). The runtime runs as `eventbus run` in a
child process (as deployed); the receiver, the gRPC client and the producer run here.

    python bench/scale_signal.py [--trials 50] [--burst 10000] [--watch-triggers 200] [--watch-seconds 20]

Needs Kafka: EVENTBUS_KAFKA_BOOTSTRAP or .services.env (scripts/services up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
from aiohttp import web  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402

from eventbus import externalscaler_pb2 as pb  # noqa: E402
from eventbus import externalscaler_pb2_grpc as pb_grpc  # noqa: E402
from schemas.loader import parse_triggers  # noqa: E402

KEDA_POLL, HPA_SYNC = 30.0, 15.0


def bootstrap() -> str:
    if os.environ.get("EVENTBUS_KAFKA_BOOTSTRAP"):
        return os.environ["EVENTBUS_KAFKA_BOOTSTRAP"]
    env = REPO / ".services.env"
    if env.exists():
        for line in env.read_text().splitlines():
            if "EVENTBUS_KAFKA_BOOTSTRAP=" in line:
                return line.split("=", 1)[1].strip().strip('"')
    sys.exit("no Kafka: run scripts/services up (or set EVENTBUS_KAFKA_BOOTSTRAP)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def trigger(name: str, topic: str, fn: str, scaling: str) -> str:
    return (f"apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: {name}, namespace: bench}}\n"
            f"spec:\n  source: {{kafka: {{topics: [{topic}], ordering: none}}}}\n  function: {{url: '{fn}'}}\n"
            f"  delivery: {{concurrency: 64, timeout: 120s, retry: {{attempts: 1}}}}\n  scaling: {scaling}\n---\n")


async def create_topics(b: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=b, request_timeout_ms=60_000)
    await admin.start()
    try:
        for i in range(0, len(names), 50):
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names[i:i + 50]], timeout_ms=60_000)
    finally:
        await admin.close()


class Receiver:
    """The push receiver and the held function, one aiohttp server."""

    def __init__(self) -> None:
        self.active_at: dict[str, float] = {}
        self.release = asyncio.Event()
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def hint(request: web.Request) -> web.Response:
            data = json.loads(await request.read())
            if data["active"] and data["trigger"] not in self.active_at:
                self.active_at[data["trigger"]] = time.time()
            return web.Response(status=204)

        async def fn(request: web.Request) -> web.Response:
            await request.read()
            if request.path.endswith("/held"):
                await self.release.wait()
            return web.Response(status=204)

        app = web.Application()
        app.add_routes([web.post("/hints", hint), web.post("/fn/{name}", fn)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        self.release.set()
        if self._runner is not None:
            await self._runner.cleanup()


async def wait_ready(port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"http://127.0.0.1:{port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    sys.exit("the runtime never became ready")


async def signal_latency(b: str, trials: int, burst: int) -> None:
    run = uuid.uuid4().hex[:6]
    topics = [f"bench-sig-{run}-{i}" for i in range(trials)]
    burst_topic = f"bench-burst-{run}"
    await create_topics(b, topics, 1)
    await create_topics(b, [burst_topic], 8)
    rec = Receiver()
    await rec.start()
    base = f"http://127.0.0.1:{rec.port}"
    spec = "".join(trigger(f"t{i}", t, f"{base}/fn/fast", f"{{push: {{url: '{base}/hints'}}}}")
                   for i, t in enumerate(topics))
    spec += trigger("burst", burst_topic, f"{base}/fn/held",
                    "{lagThreshold: 100, allowIdleConsumers: true, maxReplicas: 1000}")
    keda, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(spec)
        parse_triggers(spec, "bench.yaml")
        logfile = Path(tmp) / "runtime.log"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventbus", "run", "-f", str(path), "--kafka", b, "--keda-port", str(keda),
            "--metrics-port", str(admin), "--grace", "1s", "--log-level", "warning", cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        producer = AIOKafkaProducer(bootstrap_servers=b, linger_ms=0)
        await producer.start()
        try:
            await wait_ready(admin)
            await asyncio.sleep(3)  # the consumers' group joins settle
            push_ms, stream_ms = [], []
            async with grpc.aio.insecure_channel(f"127.0.0.1:{keda}") as ch:
                stub = pb_grpc.ExternalScalerStub(ch)
                for i, topic in enumerate(topics):
                    key = f"bench/t{i}"
                    ref = pb.ScaledObjectRef(scalerMetadata={"triggerNamespace": "bench", "triggerName": f"t{i}"})
                    stream = stub.StreamIsActive(ref)
                    first = await stream.read()
                    assert first.result is False, f"{key} was not idle"
                    sent = time.time()
                    await producer.send_and_wait(topic, b"wake")
                    got = await asyncio.wait_for(stream.read(), 10)
                    stream_at = time.time()
                    assert got.result is True
                    stream.cancel()
                    for _ in range(500):
                        if key in rec.active_at:
                            break
                        await asyncio.sleep(0.01)
                    stream_ms.append((stream_at - sent) * 1000)
                    push_ms.append((rec.active_at.get(key, float("inf")) - sent) * 1000)
            print(f"activation over {trials} trials (produce -> signal), ms:")
            for name, xs in (("push CloudEvent active", push_ms), ("StreamIsActive true", stream_ms)):
                print(f"  {name:<24} p50 {statistics.median(xs):7.1f}   p99 {pct(xs, 99):7.1f}   "
                      f"max {max(xs):7.1f}")
            want = math.ceil(burst / 100)
            t0 = time.time()
            futs = [await producer.send(burst_topic, b"x", partition=i % 8) for i in range(burst)]
            await asyncio.gather(*futs)
            t1 = time.time()
            async with aiohttp.ClientSession() as s:
                while True:
                    async with s.get(f"http://127.0.0.1:{admin}/scaling/bench/burst") as r:
                        row: dict[str, Any] = await r.json()
                    if row.get("desiredReplicas") == want:
                        break
                    if time.time() - t0 > 30:
                        print(f"  burst: hint never reached {want}: {row}")
                        break
                    await asyncio.sleep(0.01)
            t2 = time.time()
            print(f"burst of {burst}: hint desiredReplicas={want} after {t2 - t0:.2f} s from the first record "
                  f"({t2 - t1:.2f} s after the last was acked; producing took {t1 - t0:.2f} s)")
        finally:
            rec.release.set()
            await producer.stop()
            proc.terminate()
            try:
                _, err = await asyncio.wait_for(proc.communicate(), 60)
            except TimeoutError:
                proc.kill()
                _, err = await proc.communicate()
                print("the runtime did not stop within 60 s of SIGTERM; its last log lines:")
                print("\n".join(err.decode(errors="replace").splitlines()[-15:]))
            logfile.write_bytes(err)
            await rec.stop()


async def watcher_cost(b: str, n: int, seconds: float) -> None:
    from triggers.hint_board import HintBoard
    from triggers.lag_watchers import watcher_for

    run = uuid.uuid4().hex[:6]
    topics = [f"bench-cost-{run}-{i}" for i in range(max(1, n // 4))]
    await create_topics(b, topics, 2)
    spec = "".join(trigger(f"w{i}", topics[i % len(topics)], "http://fn", "{}") for i in range(n))
    triggers = parse_triggers(spec, "cost.yaml")

    from eventbus.scaling_service import KafkaReaders

    class Env:
        def __init__(self) -> None:
            self.kafka = KafkaReaders(b)

        async def kafka_reader(self, source: Any) -> Any:
            return await self.kafka.get(source)

        async def jetstream_reader(self, source: Any) -> Any:
            raise NotImplementedError

        def in_flight(self, trigger: Any) -> int:
            return 0

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    c0, w0 = cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    idle = (cpu() - c0) / (time.monotonic() - w0)
    env = Env()
    board = HintBoard()
    for t in triggers:
        board.add(watcher_for(t, env))  # type: ignore[arg-type]
    await board.start()
    await board.refresh()  # warm: metadata, coordinators
    calls0, c0, w0 = env.kafka.calls, cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    wall = time.monotonic() - w0
    busy = (cpu() - c0) / wall
    calls = (env.kafka.calls - calls0) / wall
    await board.stop()
    await env.kafka.close()
    print(f"watcher cost, {n} Kafka triggers ({len(topics)} topics x 2 partitions), {seconds:g} s, period "
          f"{board.idle_period:g} s when idle: {calls:.0f} broker requests/s, CPU {busy * 100:.2f} % of a core "
          f"(idle baseline {idle * 100:.2f} %, so the watcher adds {max(0.0, busy - idle) * 100:.2f} %)")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--watch-triggers", type=int, default=200)
    ap.add_argument("--watch-seconds", type=float, default=20.0)
    args = ap.parse_args()
    b = bootstrap()
    print(f"KEDA's defaults for comparison: polling every {KEDA_POLL:g} s (activation up to {KEDA_POLL:g} s) "
          f"+ HPA sync every {HPA_SYNC:g} s (right-sizing up to {KEDA_POLL + HPA_SYNC:g} s)")
    await signal_latency(b, args.trials, args.burst)
    await watcher_cost(b, args.watch_triggers, args.watch_seconds)


if __name__ == "__main__":
    asyncio.run(main())
