"""Instructions per event of the dispatch path, counted by callgrind: a figure that does not move with the
machine's load (wall-clock throughput on two shared cores moves by 10-15% between runs of the same code).

Each mode runs in a fresh process under `valgrind --tool=callgrind` twice, with a small and a big number of
events; the difference divided by the difference in events is the cost of one more event, without start-up.
All modes post to the same real HTTP function (the aiohttp function of `kafka_dispatch.py`, in another
process, not counted). Records are aiokafka `ConsumerRecord`s built in memory, so what is counted is:

- `post`: the floor, a bare aiohttp POST loop (8 sequential workers, one prepared request);
- `raw`: the per-event work of `kafka_dispatch.py`'s raw ceiling (a task per record, 64 at a time, no order);
- `ref`: the per-event work of `kafka_dispatch.py`'s partition reference (8 queues, a sequential worker each,
  headers copied from the record, commit bookkeeping);
- `partition`, `key`, `none`: eventbus's path, the real `SourceDriver`, ordering lanes, pipeline and gateway
  client over a source that serves the in-memory records (`MemorySource`, a `KafkaAdapter` without a
  consumer: pausing, offsets and flow control as in the real one).

Kafka's own share (the same aiokafka fetch and decode for every mode) and the wall-clock-driven work (lag
reads, heartbeats, probes), which callgrind's ~50x slow-down would blow up per event, are left out: this
compares the dispatch work per event, `kafka_dispatch.py` measures the whole thing.

    python bench/dispatch_instructions.py [--modes post,ref,partition,key,none] [--small 400 --big 2000]

With `--opcodes`, no valgrind: each child runs under a Python opcode tracer instead, and the figure is Python
opcodes per event, in all and per function, the functions of eventbus's packages and of the bench's loops
listed (the top `--top`). That shows where a mode's own Python work goes, deterministically, in seconds.
Opcodes are not equal in cost: a few that call C to build containers (`zip`, `dict(zip(...))`, `join`) can
cost more than the many they replace. A change it shows as a gain is confirmed with the callgrind count.

    python bench/dispatch_instructions.py --opcodes --modes ref,partition
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import aiohttp  # noqa: E402
from aiokafka.structs import ConsumerRecord, TopicPartition  # noqa: E402
from kafka_dispatch import ce_headers, function_server  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from connectors.gateway import GatewayClient  # noqa: E402
from schemas.loader import parse_triggers  # noqa: E402
from triggers.delivery import Pipeline  # noqa: E402
from triggers.driver import SourceDriver  # noqa: E402
from triggers.kafka_trigger import KafkaAdapter  # noqa: E402
from triggers.metrics import LATENCY_BUCKETS, Durations, Metrics  # noqa: E402
from triggers.offsets import PartitionOffsets  # noqa: E402
from triggers.source import Revoke  # noqa: E402

MODES = ("post", "raw", "ref", "partition", "key", "none")
PARTITIONS = 8
WORKERS = 8
Record: TypeAlias = "ConsumerRecord[Any, Any]"
M = TypeVar("M")


def records(n: int) -> list[Record]:
    """The records `kafka_dispatch.make_topic` produces, spread evenly over the partitions."""
    out = []
    for i in range(n):
        headers = (("ce_specversion", b"1.0"), ("ce_id", f"b-{i}".encode()), ("ce_source", b"/bench"),
                   ("ce_type", b"bench.event"), ("content-type", b"application/json"))
        out.append(ConsumerRecord("bench", i % PARTITIONS, i // PARTITIONS, 0, 0, f"k{i % 97}".encode(),
                                  json.dumps({"i": i}).encode(), None, 3, 30, headers))
    return out


class MemorySource(KafkaAdapter):
    """A `KafkaAdapter` whose records come from memory instead of a consumer."""

    def __init__(self, *args: Any, recs: list[Record], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._queues: dict[TopicPartition, deque[Record]] = {}
        for r in recs:
            self._queues.setdefault(TopicPartition(r.topic, r.partition), deque()).append(r)
        self._turn = 0

    async def open(self, revoke: Revoke) -> None:
        self._revoke = revoke

    async def housekeeping(self) -> None:
        await asyncio.Event().wait()

    def pause(self, group: Hashable) -> None:
        self._paused.add(TopicPartition(*group))  # type: ignore[misc]

    def resume(self, group: Hashable) -> None:
        tp = TopicPartition(*group)  # type: ignore[misc]
        if tp in self._paused:
            self._paused.discard(tp)
            if self._resumed is not None:
                self._resumed.set()

    async def fetch(self, limit: int) -> Sequence[Record]:
        """Up to `limit` records of the partitions not paused, one partition after the other (as aiokafka hands
        out its buffered fetches), a different one first each time."""
        while True:
            ready = [tp for tp, q in self._queues.items() if q and tp not in self._paused]
            if ready:
                break
            self._resumed = asyncio.Event()
            await self._resumed.wait()
        self._turn += 1
        ready = ready[self._turn % len(ready):] + ready[:self._turn % len(ready)]
        out: list[Record] = []
        for tp in ready:
            q = self._queues[tp]
            tracker = self.offsets.get(tp)
            if tracker is None:
                tracker = self.offsets[tp] = PartitionOffsets()
            batch = [q.popleft() for _ in range(min(len(q), limit - len(out)))]
            tracker.add_all(r.offset for r in batch)  # as `KafkaAdapter.fetch` registers a partition's batch
            out.extend(batch)
        self._batch_generation = self._generation
        return out


class Counted(Durations):
    """The trigger's latency histogram, also telling when the last event is delivered (no polling: a
    periodic check would be counted too)."""

    def __init__(self, events: int) -> None:
        super().__init__(LATENCY_BUCKETS)
        self.left = events
        self.finished = asyncio.Event()

    def observe(self, seconds: float) -> None:
        super().observe(seconds)
        self.left -= 1
        if self.left == 0:
            self.finished.set()


async def run_eventbus(url: str, ordering: str, recs: list[Record]) -> None:
    spec = f"""
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: bench, namespace: bench}}
spec:
  source: {{kafka: {{topics: [bench], ordering: {ordering}, bootstrapServers: ["127.0.0.1:9"]}}}}
  function: {{url: "{url}"}}
  delivery: {{concurrency: 64}}
"""
    trigger = parse_triggers(spec, "bench.yaml")[0]
    counted = Counted(len(recs))
    metrics = replace(Metrics(CollectorRegistry()).for_trigger(trigger.key), latency=counted)
    gateway = GatewayClient(None)
    await gateway.start()
    pipeline = Pipeline(trigger, gateway=gateway, metrics=metrics)
    driver = SourceDriver(trigger, pipeline, MemorySource(trigger, metrics, recs=recs))
    running = asyncio.create_task(driver.run(grace=5))
    await counted.finished.wait()
    driver.stop()
    await running
    await gateway.close()


async def run_ref(url: str, recs: list[Record]) -> None:
    """`kafka_dispatch.partition_reference`'s workers, fed from memory."""
    queues: dict[int, asyncio.Queue[Record]] = {p: asyncio.Queue() for p in range(PARTITIONS)}
    committable: dict[int, int] = {}
    lat: list[float] = []
    done = 0
    finished = asyncio.Event()

    async def worker(p: int, q: asyncio.Queue[Record], session: aiohttp.ClientSession) -> None:
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
            lat.append(time.perf_counter() - t0)
            committable[p] = rec.offset + 1
            done += 1
            if done >= len(recs):
                finished.set()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        workers = [asyncio.create_task(worker(p, q, session)) for p, q in queues.items()]
        for rec in recs:
            queues[rec.partition].put_nowait(rec)
        await finished.wait()
        for t in workers:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def run_raw(url: str, recs: list[Record], concurrency: int = 64) -> None:
    """`kafka_dispatch.raw_ceiling`'s dispatch, fed from memory."""
    sem = asyncio.Semaphore(concurrency)
    lat: list[float] = []
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def post(value: bytes, headers: dict[str, str]) -> None:
            try:
                t0 = time.perf_counter()
                async with session.post(url, data=value, headers=headers) as r:
                    await r.read()
                lat.append(time.perf_counter() - t0)
            finally:
                sem.release()

        for rec in recs:
            await sem.acquire()
            t = asyncio.create_task(post(rec.value, ce_headers(rec.headers)))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


async def run_post(url: str, n: int) -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "b-1", "ce-source": "/bench", "ce-type": "bench.event",
               "Content-Type": "application/json"}
    body = b'{"i": 1}'
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def worker(k: int) -> None:
            for _ in range(k):
                async with session.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(),
                                        allow_redirects=False) as r:
                    await r.read()

        await asyncio.gather(*(worker(n // WORKERS) for _ in range(WORKERS)))


def child(mode: str, url: str, n: int) -> None:
    import uvloop

    if mode == "post":
        uvloop.run(run_post(url, n))
    elif mode == "raw":
        uvloop.run(run_raw(url, records(n)))
    elif mode == "ref":
        uvloop.run(run_ref(url, records(n)))
    else:
        uvloop.run(run_eventbus(url, mode, records(n)))


def trace_opcodes(out: Path, run: Any, *args: Any) -> None:
    """Run `run(*args)` counting the Python opcodes each function executes; write {function: count} to `out`."""
    counts: dict[str, int] = {}

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        code = frame.f_code
        path = Path(code.co_filename)
        where = str(path.relative_to(REPO)) if path.is_relative_to(REPO) else f"~/{path.name}"
        name = f"{where}:{code.co_name}"

        def per_opcode(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[name] = counts.get(name, 0) + 1
            return per_opcode
        return per_opcode

    sys.settrace(tracer)
    try:
        run(*args)
    finally:
        sys.settrace(None)
    out.write_text(json.dumps(counts))


OWN = ("schemas", "connectors", "triggers", "eventbus", "bench")


def run_measured(mode: str, url: str, n: int, *, prefix: Sequence[str] = (), suffix: Sequence[str] = ()
                 ) -> subprocess.CompletedProcess[str]:
    """One child run (`prefix` before the interpreter, `suffix` after the child's arguments); exits with the
    child's output when it fails."""
    cmd = [*prefix, sys.executable, __file__, "--child", mode, "--url", url, "--events", str(n), *suffix]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{mode} with {n} events failed (rc {done.returncode}):\n{done.stderr[-2000:]}")
    return done


def opcodes(mode: str, url: str, n: int) -> dict[str, int]:
    """Opcodes per function (`package/module.py:function`, `~/module.py:function` outside the repository) of
    one traced child run."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "counts.json"
        run_measured(mode, url, n, suffix=["--trace", str(out)])
        counts: dict[str, int] = json.loads(out.read_text())
        return counts


def count(mode: str, url: str, n: int) -> int:
    """Instructions of one child run under callgrind."""
    done = run_measured(mode, url, n, prefix=["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"])
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"{mode} with {n} events: no callgrind total in its output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def each_mode(args: argparse.Namespace, measure: Callable[[str, str, int], M], what: str
              ) -> Iterator[tuple[str, M, M]]:
    """(mode, measured at --small, measured at --big) for each mode, against one function server."""
    with function_server() as (port, kind):
        url = f"http://127.0.0.1:{port}/bench/fn"
        print(f"function: {kind}; {what} per event = (count at {args.big} - count at {args.small}) / "
              f"{args.big - args.small}", flush=True)
        for mode in args.modes:
            yield mode, measure(mode, url, args.small), measure(mode, url, args.big)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES), help=f"from {','.join(MODES)}")
    ap.add_argument("--small", type=int, default=400, help="events in the small run")
    ap.add_argument("--big", type=int, default=2000, help="events in the big run")
    ap.add_argument("--opcodes", action="store_true", help="count Python opcodes per event instead (no valgrind)")
    ap.add_argument("--top", type=int, default=25, help="with --opcodes: functions listed per mode")
    ap.add_argument("--libraries", action="store_true",
                    help="with --opcodes: list the libraries' functions too (aiohttp, asyncio, ...)")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.trace:
            trace_opcodes(args.trace, child, args.child, args.url, args.events)
        else:
            child(args.child, args.url, args.events)
        return
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; choose from {MODES}")
    if args.big <= args.small or args.small % WORKERS or args.big % WORKERS:
        ap.error(f"--big must exceed --small, and both be multiples of {WORKERS}")
    if args.opcodes:
        opcode_report(args)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    per_event: dict[str, float] = {}
    for mode, small, big in each_mode(args, count, "instructions"):
        per_event[mode] = (big - small) / (args.big - args.small)
        print(f"  {mode:10s} {per_event[mode] / 1000:8.1f}k instructions/event", flush=True)
    print()
    print("| mode | instructions/event | vs ref | above the bare POST |")
    print("|---|---|---|---|")
    for mode, per in per_event.items():
        vs_ref = f"{per / per_event['ref']:.3f}" if "ref" in per_event else "-"
        above = f"{(per - per_event['post']) / 1000:+.1f}k" if "post" in per_event else "-"
        print(f"| {mode} | {per / 1000:.1f}k | {vs_ref} | {above} |")


def opcode_report(args: argparse.Namespace) -> None:
    """`--opcodes`: Python opcodes per event of each mode, in all and per function of eventbus and the bench."""
    totals: dict[str, float] = {}
    for mode, small, big in each_mode(args, opcodes, "Python opcodes"):
        per = {f: (big.get(f, 0) - small.get(f, 0)) / (args.big - args.small) for f in big.keys() | small}
        totals[mode] = sum(per.values())
        shown = [(v, f) for f, v in per.items() if (args.libraries or f.split("/")[0] in OWN) and v >= 0.5]
        listed = sorted(shown, reverse=True)
        which = "all" if args.libraries else "eventbus and bench"
        print(f"\n{mode}: {totals[mode]:.0f} opcodes/event; {which} functions "
              f"({sum(v for v, _ in listed):.0f} in all):")
        for v, f in listed[:args.top]:
            print(f"  {v:8.1f}  {f}")
    if "ref" in totals:
        print()
        for mode, total in totals.items():
            print(f"{mode}: {total:.0f} opcodes/event, {total / totals['ref']:.3f} x ref")


if __name__ == "__main__":
    main()
