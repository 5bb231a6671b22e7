"""Kafka → HTTP dispatch: eventbus (ordering none/key/partition) against two bare loops, in one run.

- raw ceiling: a bare aiokafka consumer posting each record with aiohttp at the same concurrency, no ordering,
  no offset tracking, no retries, no CloudEvents decoding;
- partition (8 workers): a bare per-partition sequential loop, one task per partition posting with aiohttp and
  marking its offset committable after each 2xx (committed every 0.5 s, as eventbus does; a full partition queue
  pauses that partition at the consumer). It is what a Go connector with `partition` semantics does.

A discarded warm-up run comes first, and each round runs the modes in a rotated order (round n starts
with the n-th mode), so the cold first run and the position in a round favour no mode. Every measurement
runs in a fresh child process, so each one's CPU time (`resource.getrusage`, from its first event to its
last) and peak RSS (`ru_maxrss`) are its own. The function is nginx answering 204 when nginx is
installed, else a minimal aiohttp app in another process.

    python bench/kafka_dispatch.py [--events 100000] [--partitions 8] [--concurrency 64] [--rounds 3]
                                   [--loop asyncio|uvloop|both] [--hashed] [--no-warmup]
    python bench/kafka_dispatch.py --backlog 1000000 [--slow-ms 5]   # memory with a backlog (eventbus run)

Records are spread evenly over the partitions (each gets events/N), so `partition` mode measures 8 lanes
in parallel; `--hashed` places them by key hash instead, where the largest partition bounds `partition` mode
(one event at a time per partition) whatever the engine.

Needs Kafka: EVENTBUS_KAFKA_BOOTSTRAP or .services.env (scripts/services up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.structs import OffsetAndMetadata  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from eventbus.runtime import Runtime, RuntimeConfig  # noqa: E402
from schemas.loader import parse_triggers  # noqa: E402
from triggers.metrics import LATENCY_BUCKETS, Durations, Metrics  # noqa: E402

MODES = ("raw", "ref", "none", "key", "partition")
LABELS = {"raw": "raw ceiling", "ref": "partition (8 workers)", "none": "eventbus ordering=none",
          "key": "eventbus ordering=key", "partition": "eventbus ordering=partition"}


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
import asyncio, sys
from aiohttp import web
slow = float(sys.argv[2]) / 1000 if len(sys.argv) > 2 else 0.0
count = 0
async def h(request):
    global count
    await request.read()
    if slow:
        await asyncio.sleep(slow)
    count += 1
    return web.Response(status=204)
async def c(request):
    return web.Response(text=str(count))
app = web.Application()
app.router.add_get("/_count", c)
app.router.add_route("*", "/{tail:.*}", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def start_function(port: int, workdir: Path, slow_ms: float = 0.0) -> tuple[subprocess.Popen[bytes], str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx and not slow_ms:
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
    return subprocess.Popen([sys.executable, "-c", AIOHTTP_FUNCTION, str(port), str(slow_ms)]), "aiohttp"


@contextmanager
def function_server(slow_ms: float = 0.0) -> Iterator[tuple[int, str]]:
    """The function (see `start_function`) on a free port, listening: yields (port, kind); stopped on exit."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc, kind = start_function(port, Path(tmp), slow_ms=slow_ms)
        try:
            asyncio.run(wait_port(port))
            yield port, kind
        finally:
            proc.terminate()
            proc.wait(10)


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


async def make_topic(bs: str, partitions: int, events: int, hashed: bool = False) -> str:
    """A topic of `events` binary CloudEvents keyed `k0`..`k96`: spread evenly over the partitions (record i
    on partition i mod N), or with `hashed` where the keys hash to (97 keys over 8 partitions put 1% of the
    events on one partition and 20% on another: `partition` mode then waits on the largest one)."""
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
    futs: deque[asyncio.Future[Any]] = deque()
    for i in range(events):
        headers = [("ce_specversion", b"1.0"), ("ce_id", f"b-{i}".encode()), ("ce_source", b"/bench"),
                   ("ce_type", b"bench.event"), ("content-type", b"application/json")]
        futs.append(await producer.send(topic, json.dumps({"i": i}).encode(), key=f"k{i % 97}".encode(),
                                        headers=headers, partition=None if hashed else i % partitions))
        if len(futs) >= 50_000:  # bounded: a 1M backlog must not hold 1M futures
            await asyncio.gather(*futs)
            futs.clear()
    await asyncio.gather(*futs)
    await producer.stop()
    return topic


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Window:
    """Throughput and CPU from the first event to the last (start-up and group join are not measured)."""

    def __init__(self, events: int) -> None:
        self.events = events
        self.t0 = 0.0
        self.cpu0 = 0.0
        self.lat: list[float] = []

    def start(self) -> None:
        if not self.t0:
            self.t0 = time.perf_counter()
            self.cpu0 = cpu_seconds()

    def result(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.cpu0
        return {"eps": self.events / elapsed, "p50": pct(self.lat, 0.5) * 1000, "p99": pct(self.lat, 0.99) * 1000,
                "cpu_ms_per_1k": cpu * 1000 / (self.events / 1000),
                "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def ce_headers(headers: Any) -> dict[str, str]:
    return {k.replace("ce_", "ce-", 1): v.decode() for k, v in headers}


async def raw_ceiling(bs: str, topic: str, url: str, events: int, concurrency: int) -> dict[str, float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    sem = asyncio.Semaphore(concurrency)
    w = Window(events)
    done = 0
    finished = asyncio.Event()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(value: bytes, headers: dict[str, str]) -> None:
            nonlocal done
            try:
                t0 = time.perf_counter()
                async with session.post(url, data=value, headers=headers) as r:
                    await r.read()
                w.lat.append(time.perf_counter() - t0)
            finally:
                sem.release()
                done += 1
                if done >= events:
                    finished.set()

        tasks: set[asyncio.Task[None]] = set()
        while not finished.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            for recs in batch.values():
                for rec in recs:
                    w.start()
                    await sem.acquire()
                    t = asyncio.create_task(post(rec.value, ce_headers(rec.headers)))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
        result = w.result()
    await consumer.stop()
    return result


async def partition_reference(bs: str, topic: str, url: str, events: int, queue_size: int) -> dict[str, float]:
    """One sequential worker per partition; a full partition queue pauses only that partition."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bs, group_id=f"ref-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    w = Window(events)
    done = 0
    finished = asyncio.Event()
    queues: dict[TopicPartition, asyncio.Queue[Any]] = {}
    committable: dict[TopicPartition, int] = {}
    paused: set[TopicPartition] = set()
    workers: list[asyncio.Task[None]] = []

    async def worker(tp: TopicPartition, q: asyncio.Queue[Any], session: aiohttp.ClientSession) -> None:
        nonlocal done
        while True:
            rec = await q.get()
            while True:
                t0 = time.perf_counter()
                async with session.post(url, data=rec.value, headers=ce_headers(rec.headers)) as r:
                    await r.read()
                    ok = 200 <= r.status < 300
                if ok:
                    break
            w.lat.append(time.perf_counter() - t0)
            committable[tp] = rec.offset + 1
            if tp in paused and q.qsize() <= queue_size // 2:
                paused.discard(tp)
                consumer.resume(tp)
            done += 1
            if done >= events:
                finished.set()

    async def commit_loop() -> None:
        while True:
            await asyncio.sleep(0.5)
            if committable:
                todo = {tp: OffsetAndMetadata(o, "") for tp, o in committable.items()}
                committable.clear()
                await consumer.commit(todo)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        committer = asyncio.create_task(commit_loop())
        fetch: asyncio.Future[Any] = asyncio.ensure_future(asyncio.sleep(0))
        while not finished.is_set():
            fetch = asyncio.ensure_future(consumer.getmany(timeout_ms=200, max_records=500))
            await asyncio.wait({fetch, asyncio.ensure_future(finished.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if not fetch.done():
                break
            for tp, recs in fetch.result().items():
                q = queues.get(tp)
                if q is None:
                    q = queues[tp] = asyncio.Queue()
                    workers.append(asyncio.create_task(worker(tp, q, session)))
                for rec in recs:
                    w.start()
                    q.put_nowait(rec)
                if q.qsize() >= queue_size and tp not in paused:
                    paused.add(tp)
                    consumer.pause(tp)
        fetch.cancel()
        result = w.result()
        for t in [*workers, committer]:
            t.cancel()
        await asyncio.gather(*workers, committer, fetch, return_exceptions=True)
    await consumer.stop()
    return result


class TimedDispatches(Durations):
    """The trigger's own dispatch-latency histogram, also recording each latency into the window and noting
    the last event: the harness costs eventbus no extra frame per event (the reference times inline too)."""

    __slots__ = ("done", "finished", "window")

    def __init__(self, window: Window) -> None:
        super().__init__(LATENCY_BUCKETS)
        self.window = window
        self.done = 0
        self.finished = asyncio.Event()

    def observe(self, seconds: float) -> None:
        super().observe(seconds)
        w = self.window
        if not w.t0:  # the first dispatch began `seconds` ago
            w.start()
            w.t0 -= seconds
        w.lat.append(seconds)
        self.done += 1
        if self.done >= w.events:
            self.finished.set()


async def measure_eventbus(config: RuntimeConfig, source: str, events: int, concurrency: int) -> dict[str, float]:
    """Run one trigger with `source` (a flow-style YAML mapping) in-process until `events` are dispatched."""
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
    w = Window(events)
    metrics = Metrics(CollectorRegistry())
    triggers = parse_triggers(spec, "bench.yaml")
    timed = TimedDispatches(w)
    metrics.triggers[triggers[0].key] = replace(metrics.for_trigger(triggers[0].key), latency=timed)
    rt = Runtime(config, metrics=metrics)
    await rt.start(triggers)
    await timed.finished.wait()
    result = w.result()
    await rt.stop()
    return result


async def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    url = args.gateway + "/bench/fn"
    if args.child == "raw":
        r = await raw_ceiling(args.bootstrap, args.topic, url, args.events, args.concurrency)
    elif args.child == "ref":
        r = await partition_reference(args.bootstrap, args.topic, url, args.events, args.concurrency)
    else:
        source = f"{{kafka: {{topics: [{args.topic}], ordering: {args.child}, initialOffset: earliest}}}}"
        r = await measure_eventbus(RuntimeConfig(gateway=args.gateway, kafka=args.bootstrap, grace=5), source,
                                   args.events, args.concurrency)
    print(json.dumps(r), flush=True)


def run_child(mode: str, loop: str, topic: str, gateway: str, args: argparse.Namespace, *, repo: Path = REPO,
              env: Mapping[str, str] | None = None) -> dict[str, float]:
    """One measurement by `repo`'s bench (default: this checkout) in a fresh process, with `env` added."""
    cmd = [sys.executable, str(repo / "bench" / "kafka_dispatch.py"), "--child", mode, "--loop", loop,
           "--topic", topic, "--gateway", gateway, "--bootstrap", args.bootstrap, "--events", str(args.events),
           "--concurrency", str(args.concurrency)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800, cwd=repo,
                         env={**os.environ, **env} if env else None)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def use_loop(loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def rotated(modes: list[str], n: int) -> list[str]:
    """Round n's order: the modes rotated by n, so no mode always runs first (the cold run: page cache,
    the function's first connections) or always right after the same neighbour."""
    k = n % len(modes) if modes else 0
    return modes[k:] + modes[:k]


def throughput(args: argparse.Namespace) -> None:
    loops = ["asyncio", "uvloop"] if args.loop == "both" else [args.loop]
    if "uvloop" in loops and not uvloop_available():
        sys.exit("uvloop is not installed: pip install 'eventbus[fast]' (or --loop asyncio)")
    with function_server() as (port, kind):
        gateway = f"http://127.0.0.1:{port}"
        print(f"function: {kind} on {gateway}; {args.events} events, {args.partitions} partitions "
              f"({'by key hash' if args.hashed else 'evenly'}), "
              f"concurrency {args.concurrency}, {args.rounds} round(s), loop {', '.join(loops)}; "
              f"median of the rounds", flush=True)
        topic = asyncio.run(make_topic(args.bootstrap, args.partitions, args.events, args.hashed))
        if args.warmup:
            r = run_child(args.modes[0], loops[0], topic, gateway, args)
            print(f"  warm-up {loops[0]:<7} {LABELS[args.modes[0]]:<28} {r['eps']:>7.0f} ev/s (discarded)",
                  flush=True)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for n in range(args.rounds):
            for loop in loops:
                for mode in rotated(args.modes, n):
                    r = run_child(mode, loop, topic, gateway, args)
                    results.setdefault((loop, mode), []).append(r)
                    print(f"  round {n + 1} {loop:<7} {LABELS[mode]:<28} {r['eps']:>7.0f} ev/s "
                          f"{r['cpu_ms_per_1k']:>6.1f} CPU ms/1k", flush=True)
    metrics = ("eps", "p50", "p99", "cpu_ms_per_1k", "rss_mb")
    med = {k: {m: statistics.median(r[m] for r in rs) for m in metrics} for k, rs in results.items()}

    def ratio(loop: str, mode: str, base: str, metric: str = "eps") -> float:
        """The median over the rounds of each round's ratio (a round's modes ran back to back, so a ratio
        within a round is steadier on a noisy machine than a ratio of medians)."""
        return statistics.median(a[metric] / b[metric] for a, b in zip(results[(loop, mode)],
                                                                        results[(loop, base)], strict=True))
    for loop in loops:
        raw = med.get((loop, "raw"))
        ref = med.get((loop, "ref"))
        print(f"\nloop: {loop}")
        print(f"{'run':<28}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/1k':>11}{'RSS MB':>8}"
              f"{'vs raw':>8}{'vs ref':>8}")
        for mode in args.modes:
            r = med[(loop, mode)]
            vs_raw = f"{ratio(loop, mode, 'raw'):.2f}" if raw else "-"
            vs_ref = f"{ratio(loop, mode, 'ref'):.2f}" if ref else "-"
            print(f"{LABELS[mode]:<28}{r['eps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{r['cpu_ms_per_1k']:>11.1f}"
                  f"{r['rss_mb']:>8.0f}{vs_raw:>8}{vs_ref:>8}")
        if raw:
            for mode, target in (("none", 0.9), ("key", 0.9), ("partition", 0.8)):
                if (loop, mode) in med:
                    print(f"{mode}/raw = {ratio(loop, mode, 'raw'):.2f} (target >= {target})")
            if (loop, "none") in med:
                print(f"CPU per event none/raw = {ratio(loop, 'none', 'raw', 'cpu_ms_per_1k'):.2f} "
                      f"(target <= 1.15)")
        if ref and (loop, "partition") in med:
            print(f"partition/reference = {ratio(loop, 'partition', 'ref'):.2f} (target >= 1.0)")
        print("(ratios: median over the rounds of each round's ratio)")


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def backlog(args: argparse.Namespace) -> None:
    """`eventbus run` (the real CLI, a child process) drains a pre-produced backlog through a slow function;
    its RSS is sampled from /proc: peak over the run, and the peaks while the first and the last 100,000
    events are delivered."""
    n = args.backlog
    window = min(100_000, n // 4)
    with function_server(args.slow_ms) as (port, _), tempfile.TemporaryDirectory() as tmp:
        rt: subprocess.Popen[bytes] | None = None
        try:
            t0 = time.perf_counter()
            topic = asyncio.run(make_topic(args.bootstrap, args.partitions, n))
            print(f"produced {n} events to {topic} in {time.perf_counter() - t0:.0f}s; function sleeps "
                  f"{args.slow_ms:g} ms, concurrency {args.concurrency}, ordering {args.ordering}", flush=True)
            spec = Path(tmp) / "t.yaml"
            spec.write_text(f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: backlog, namespace: bench}}
spec:
  source: {{kafka: {{bootstrapServers: ["{args.bootstrap}"], topics: [{topic}], ordering: {args.ordering},
            initialOffset: earliest}}}}
  function: {{name: fn}}
  delivery: {{concurrency: {args.concurrency}}}
""")
            env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
            rt = subprocess.Popen([sys.executable, "-m", "eventbus.cli", "run", "-f", str(spec), "--gateway",
                                   f"http://127.0.0.1:{port}", "--log-level", "warning"], env=env, cwd=REPO)
            first = last = 0
            samples: list[tuple[int, int]] = []
            started = time.perf_counter()
            while True:
                time.sleep(0.5)
                if rt.poll() is not None:
                    sys.exit(f"eventbus run exited with {rt.returncode}")
                with urlopen_count(port) as count:
                    done = count
                kb = rss_kb(rt.pid)
                samples.append((done, kb))
                if done <= window:
                    first = max(first, kb)
                if done >= n - window:
                    last = max(last, kb)
                if done >= n:
                    break
                if time.perf_counter() - started > args.max_seconds:
                    print(f"stopped after {args.max_seconds}s at {done} events", flush=True)
                    break
            peak = rss_kb(rt.pid, "VmHWM")
            elapsed = time.perf_counter() - started
        finally:
            if rt is not None:
                rt.terminate()
                rt.wait(60)
    done = samples[-1][0] if samples else 0
    print(f"delivered {done} of {n} in {elapsed:.0f}s ({done / elapsed:.0f} ev/s)")
    print(f"peak RSS {peak / 1024:.0f} MB (target <= 150 MB); while the first {window} events: {first / 1024:.0f} MB, "
          f"the last {window}: {last / 1024:.0f} MB; growth {(last - first) / 1024:+.0f} MB (target: none)")


class urlopen_count:
    def __init__(self, port: int) -> None:
        self.port = port

    def __enter__(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/_count", timeout=5) as r:
            return int(r.read())

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--hashed", action="store_true",
                    help="place records by their key's hash (skewed: 1%%..20%% per partition) instead of evenly")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="repeat and report medians")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the discarded warm-up run before the rounds")
    ap.add_argument("--loop", choices=["auto", "asyncio", "uvloop", "both"], default="auto",
                    help="auto: uvloop when installed (what `eventbus run` uses), else asyncio")
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                    help=f"comma-separated, from {','.join(MODES)}")
    ap.add_argument("--backlog", type=int, default=0, help="memory run: drain a backlog of N events")
    ap.add_argument("--slow-ms", type=float, default=5.0, help="memory run: the function's delay")
    ap.add_argument("--ordering", default="none", help="memory run: the trigger's ordering")
    ap.add_argument("--max-seconds", type=float, default=1800, help="memory run: stop after this long")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--topic", help=argparse.SUPPRESS)
    ap.add_argument("--gateway", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.loop == "auto":
        args.loop = "uvloop" if uvloop_available() else "asyncio"
    if args.child:
        use_loop(args.loop)
        asyncio.run(child(args))
        return
    args.bootstrap = bootstrap()
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {MODES}")
    if args.backlog:
        backlog(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
