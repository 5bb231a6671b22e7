"""The source driver at the adapter boundary: a fake `Source` (not a fake Kafka) and a fake gateway.

Settle on every exit path, commit order under out-of-order completion, revocation mid-retry, drain at
stop, restart backoff, stop waking a blocked fetch loop, and pause/resume of a full partition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from prometheus_client import CollectorRegistry

from connectors.gateway import Response
from schemas.cloudevent import CloudEvent
from schemas.errors import InvalidCloudEvent, UnsupportedFormat
from schemas.loader import parse_triggers
from schemas.trigger import Trigger
from triggers import driver as driver_mod
from triggers.delivery import Pipeline
from triggers.driver import SourceDriver
from triggers.metrics import Metrics
from triggers.offsets import PartitionOffsets
from triggers.source import RawInput, Revoke, SourceUnreachable

# --- fakes -------------------------------------------------------------------------------------


@dataclass(eq=False)
class Msg:
    group: str
    offset: int
    key: str | None = None
    decode_error: Exception | None = None
    delivery: int = 1

    @property
    def id(self) -> str:
        return f"{self.group}/{self.offset}"


class FakeSource:
    """A broker in memory with Kafka's rules: offsets per group, commit only the settled prefix, pause."""

    broker = "Fake at mem://"

    def __init__(self, *, redelivers: bool = False, pauses_groups: bool = True) -> None:
        self.redelivers = redelivers
        self.pauses_groups = pauses_groups
        self.lag = 0
        self.inbox: list[Msg] = []
        self.arrived = asyncio.Event()
        self.offsets: dict[str, PartitionOffsets] = {}
        self.acked: list[str] = []
        self.naked: list[tuple[str, float]] = []
        self.paused: set[str] = set()
        self.pause_log: list[tuple[str, str]] = []
        self.opens = 0
        self.closes = 0
        self.fail_open = 0
        self.fail_fetch: Exception | None = None
        self.reachable = True
        self.revoke: Revoke | None = None
        self.fetch_limits: list[int] = []

    def put(self, *msgs: Msg) -> None:
        self.inbox.extend(msgs)
        self.arrived.set()

    async def open(self, revoke: Revoke) -> None:
        self.opens += 1
        if self.fail_open > 0:
            self.fail_open -= 1
            raise SourceUnreachable("cannot reach Fake at mem://: connection refused")
        self.revoke = revoke
        self.offsets.clear()
        self.paused.clear()

    async def fetch(self, limit: int) -> Sequence[Msg]:
        self.fetch_limits.append(limit)
        if self.fail_fetch is not None:
            exc, self.fail_fetch = self.fail_fetch, None
            raise exc
        out: list[Msg] = []
        for m in list(self.inbox):
            if len(out) >= limit:
                break
            if m.group in self.paused:
                continue
            self.inbox.remove(m)
            self.offsets.setdefault(m.group, PartitionOffsets()).add(m.offset)
            out.append(m)
        if not out:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.05)
            except TimeoutError:
                pass
        return out

    def current(self) -> bool:
        return True

    def group(self, msg: Msg) -> Hashable:
        return msg.group

    def lane(self, msg: Msg, event: CloudEvent | None) -> Hashable | None:
        return msg.group if msg.key is None else (msg.group, msg.key)

    def decode(self, msg: Msg) -> CloudEvent:
        if msg.decode_error is not None:
            raise msg.decode_error
        return CloudEvent({"specversion": "1.0", "id": msg.id, "source": "/fake", "type": "t"}, b"{}")

    def raw(self, msg: Msg) -> RawInput:
        return RawInput(id=msg.id, source="fake://", data=b"\xff", content_type=None)

    def key(self, msg: Msg) -> bytes | None:
        return None

    def attempt(self, msg: Msg) -> int:
        return msg.delivery

    async def ack(self, msg: Msg) -> None:
        self.acked.append(msg.id)
        self.offsets[msg.group].settle(msg.offset)

    async def nak(self, msg: Msg, delay: float) -> None:
        self.naked.append((msg.id, delay))

    def pause(self, group: Hashable) -> None:
        assert isinstance(group, str)
        self.paused.add(group)
        self.pause_log.append(("pause", group))

    def resume(self, group: Hashable) -> None:
        assert isinstance(group, str)
        self.paused.discard(group)
        self.pause_log.append(("resume", group))
        self.arrived.set()

    async def housekeeping(self) -> None:
        await asyncio.Event().wait()

    async def probe(self) -> None:
        if not self.reachable:
            raise SourceUnreachable("cannot reach Fake at mem://: gone")

    async def stop_intake(self) -> Sequence[Msg]:
        return ()

    async def close(self) -> None:
        self.closes += 1

    def position(self, group: str) -> int | None:
        t = self.offsets.get(group)
        return None if t is None else t.position


Answer = Callable[[str, int], Awaitable[int]]


@dataclass
class FakeGateway:
    """Answers per `answer(event id, attempt)` (a status code); may raise to simulate a bug."""

    answer: Answer
    posts: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)

    def function_url(self, *, name: str, namespace: str) -> str:
        return f"http://fn/{namespace}/{name}"

    async def post(self, url: str, headers: dict[str, str], body: bytes, *, timeout: float) -> Response:
        eid = headers["ce-id"]
        n = self.calls[eid] = self.calls.get(eid, 0) + 1
        self.posts.append(eid)
        status = await self.answer(eid, n)
        return Response(status, CIMultiDictProxy(CIMultiDict()), b"", None if status else "refused")


@dataclass
class MemorySink:
    name: str = "mem"
    events: list[CloudEvent] = field(default_factory=list)

    async def send(self, event: CloudEvent, key: bytes | None = None) -> None:
        self.events.append(event)

    def reasons(self) -> dict[str, str]:
        return {str(e.attributes["id"]): str(e.attributes["deadletterreason"]) for e in self.events}


def _trigger(concurrency: int = 8, attempts: int = 3) -> Trigger:
    text = f"""
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: drv, namespace: test}}
spec:
  source: {{kafka: {{topics: [t], bootstrapServers: ['127.0.0.1:1']}}}}
  function: {{url: 'http://fn/x'}}
  delivery:
    concurrency: {concurrency}
    timeout: 5s
    retry: {{attempts: {attempts}, delay: 10ms, maxDelay: 20ms}}
"""
    return parse_triggers(text, "t.yaml")[0]


async def _ok(eid: str, n: int) -> int:
    return 204


def _driver(source: FakeSource, answer: Answer = _ok, *, concurrency: int = 8, attempts: int = 3,
            dead_letter: MemorySink | None = None, **kw: int) -> tuple[SourceDriver[Msg], FakeGateway]:
    trigger = _trigger(concurrency, attempts)
    gw = FakeGateway(answer)
    pipeline = Pipeline(trigger, gateway=gw, metrics=Metrics(CollectorRegistry()).for_trigger(trigger.key),  # type: ignore[arg-type]
                        dead_letter=dead_letter)
    return SourceDriver(trigger, pipeline, source, **kw), gw  # type: ignore[arg-type]


async def _until(cond: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_mod, "RESTART_MIN", 0.02)
    monkeypatch.setattr(driver_mod, "RESTART_MAX", 0.08)
    monkeypatch.setattr(driver_mod, "PROBE_INTERVAL", 0.02)
    monkeypatch.setattr(driver_mod, "REVOKE_MARGIN", 0.1)


# --- tests -------------------------------------------------------------------------------------


async def test_every_exit_path_settles() -> None:
    src = FakeSource()
    dlq = MemorySink()

    async def answer(eid: str, n: int) -> int:
        if eid == "p/1":
            return 422
        if eid == "p/2":
            return 503
        if eid == "p/3":
            raise RuntimeError("a bug in dispatch")
        return 204

    drv, gw = _driver(src, answer, dead_letter=dlq)
    src.put(Msg("p", 0), Msg("p", 1), Msg("p", 2), Msg("p", 3),
            Msg("p", 4, decode_error=InvalidCloudEvent("must not be empty", "id")),
            Msg("p", 5, decode_error=UnsupportedFormat("application/cloudevents-batch+json")),
            Msg("p", 6, decode_error=KeyError("decoder bug")),
            Msg("p", 7))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: src.position("p") == 8, what="every offset settled")
    reasons = dlq.reasons()
    assert reasons["p/1"].startswith("function answered 422")
    assert reasons["p/2"].startswith("retries exhausted")
    assert reasons["p/3"] == "internal: RuntimeError: a bug in dispatch"
    assert "must not be empty" in reasons["p/4"]
    assert "application/cloudevents-batch+json" in reasons["p/5"]
    assert reasons["p/6"] == "internal: KeyError: 'decoder bug'"
    assert sorted(src.acked) == [f"p/{i}" for i in range(8)]
    assert gw.calls["p/3"] == 1
    assert not run.done(), "the trigger keeps running"
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_internal_error_without_dead_letter_sink_is_dropped_and_settled() -> None:
    src = FakeSource()

    async def answer(eid: str, n: int) -> int:
        raise ValueError("boom")

    drv, _ = _driver(src, answer)
    src.put(Msg("p", 0), Msg("p", 1))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: src.position("p") == 2)
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_commit_never_passes_an_open_fate_under_out_of_order_completion() -> None:
    src = FakeSource()
    gate = asyncio.Event()

    async def answer(eid: str, n: int) -> int:
        if eid == "p/3":
            await gate.wait()
        else:
            await asyncio.sleep(0.001 * (10 - int(eid.split("/")[1])))  # later offsets finish first
        return 204

    drv, _ = _driver(src, answer)
    src.put(*(Msg("p", i, key=f"k{i}") for i in range(10)))  # ten key lanes: run in parallel
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: len(src.acked) == 9, what="all but offset 3")
    assert src.position("p") == 3
    gate.set()
    await _until(lambda: src.position("p") == 10)
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_revocation_mid_retry_stops_the_partition_before_release() -> None:
    src = FakeSource()

    async def answer(eid: str, n: int) -> int:
        return 503 if eid.startswith("p0/") else 204  # p0 retries for a long time

    drv, gw = _driver(src, answer, attempts=10_000)
    src.put(Msg("p0", 0), Msg("p0", 1), Msg("p1", 0), Msg("p1", 1))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: gw.calls.get("p0/0", 0) >= 3, what="p0/0 retrying")
    assert src.revoke is not None
    started = time.monotonic()
    await asyncio.wait_for(src.revoke(["p0"]), 5)
    assert time.monotonic() - started < 1.0
    posts = len([p for p in gw.posts if p.startswith("p0/")])
    await asyncio.sleep(0.1)
    assert len([p for p in gw.posts if p.startswith("p0/")]) == posts, "a revoked partition kept dispatching"
    assert "p0/0" not in src.acked and "p0/1" not in src.acked
    assert "p0/1" not in gw.calls, "a queued event of the revoked partition ran"
    assert src.position("p0") is None, "cancelled = unsettled = not committed"
    await _until(lambda: src.position("p1") == 2)
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_stop_drains_within_grace() -> None:
    src = FakeSource()

    async def slow(eid: str, n: int) -> int:
        await asyncio.sleep(0.05)
        return 204

    drv, _ = _driver(src, slow)
    src.put(*(Msg("p", i) for i in range(5)))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: len(src.fetch_limits) > 0 and not src.inbox)
    drv.stop()
    assert not drv.ready.is_set()
    await asyncio.wait_for(run, 5)
    assert src.position("p") == 5 and src.closes == 1
    assert drv.pipeline.metrics.family.abandoned == 0


async def test_grace_over_abandons_unsettled_and_returns() -> None:
    src = FakeSource()

    async def stuck(eid: str, n: int) -> int:
        await asyncio.sleep(3600)
        return 204

    drv, _ = _driver(src, stuck)
    src.put(Msg("p", 0), Msg("p", 1))
    run = asyncio.create_task(drv.run(0.2))
    await _until(lambda: not src.inbox)
    started = time.monotonic()
    drv.stop()
    await asyncio.wait_for(run, 5)
    assert 0.15 < time.monotonic() - started < 1.0
    assert src.acked == [] and src.position("p") is None
    assert drv.pipeline.metrics.family.abandoned == 2  # the shutdown report counts them (the running one too)


async def test_stop_wakes_a_fetch_loop_blocked_on_a_full_trigger() -> None:
    src = FakeSource(pauses_groups=False)

    async def stuck(eid: str, n: int) -> int:
        await asyncio.sleep(3600)
        return 204

    drv, _ = _driver(src, stuck, concurrency=2, total_limit=2)
    src.put(*(Msg("p", i, key=f"k{i}") for i in range(10)))
    run = asyncio.create_task(drv.run(0.2))
    await _until(lambda: drv.outstanding == 2)
    await asyncio.sleep(0.05)
    assert len(src.inbox) == 8, "no fetch beyond the trigger's bound"
    started = time.monotonic()
    drv.stop()
    await asyncio.wait_for(run, 5)
    assert time.monotonic() - started < 1.0, "the grace period must start at once"


async def test_restart_with_backoff_after_unreachable_and_after_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="eventbus.driver")
    src = FakeSource()
    src.fail_open = 2
    drv, _ = _driver(src)
    run = asyncio.create_task(drv.run(1))
    await _until(lambda: drv.ready.is_set(), what="ready after two failed opens")
    assert src.opens == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "eventbus.driver"]
    assert sum("cannot reach Fake at mem://" in ln and "client errors suppressed" in ln for ln in lines) == 2
    assert any("reachable again" in ln for ln in lines)
    # the source fails while running: unsettled work is cancelled, the source reopened
    src.fail_fetch = ConnectionResetError("lost it")
    await _until(lambda: src.opens == 4 and drv.ready.is_set(), what="reopened")
    assert drv.restarts == 1 and src.closes >= 3
    src.put(Msg("p", 0))
    await _until(lambda: src.acked == ["p/0"])
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_not_ready_while_the_broker_is_unreachable() -> None:
    src = FakeSource()
    drv, _ = _driver(src)
    run = asyncio.create_task(drv.run(1))
    await _until(lambda: drv.ready.is_set())
    src.reachable = False
    await _until(lambda: not drv.ready.is_set(), what="not ready during the outage")
    src.reachable = True
    await _until(lambda: drv.ready.is_set(), what="ready again")
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_full_partition_is_paused_alone_and_resumed() -> None:
    src = FakeSource()
    gate = asyncio.Event()

    async def answer(eid: str, n: int) -> int:
        if eid.startswith("hot/"):
            await gate.wait()
        return 204

    drv, _ = _driver(src, answer, group_limit=4)
    src.put(*(Msg("hot", i) for i in range(20)))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: "hot" in src.paused, what="hot partition paused")
    src.put(*(Msg("quiet", i) for i in range(3)))
    await _until(lambda: src.position("quiet") == 3, what="the quiet partition keeps flowing")
    assert src.paused == {"hot"}
    gate.set()
    await _until(lambda: src.position("hot") == 20, what="hot drained after resume")
    assert ("resume", "hot") in src.pause_log
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_redelivering_source_naks_retries_and_dead_letters_the_last() -> None:
    src = FakeSource(redelivers=True)
    dlq = MemorySink()

    async def down(eid: str, n: int) -> int:
        return 503

    drv, _ = _driver(src, down, attempts=3, dead_letter=dlq)
    src.put(Msg("s", 0, delivery=1), Msg("s", 1, delivery=3))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: len(src.naked) == 1 and len(src.acked) == 1)
    assert src.naked[0][0] == "s/0" and src.acked == ["s/1"]
    assert dlq.reasons()["s/1"].startswith("retries exhausted")
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_revoke_waits_for_a_job_that_finishes_in_time() -> None:
    src = FakeSource()

    async def brief(eid: str, n: int) -> int:
        await asyncio.sleep(0.03)
        return 204

    drv, _ = _driver(src, brief)
    src.put(Msg("p", 0))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: drv.outstanding == 1)
    assert src.revoke is not None
    await src.revoke(["p"])
    assert src.acked == ["p/0"], "a job that ends within the revocation window is settled, not cancelled"
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_revocation_lets_the_attempt_in_flight_finish_but_starts_no_other() -> None:
    """Cancelling the client side of a request does not stop the function: the attempt in flight ends,
    then the item is left unsettled (the next owner delivers it), whatever its retry budget."""
    src = FakeSource()
    entered = asyncio.Event()
    gate = asyncio.Event()
    finished: list[str] = []

    async def held(eid: str, n: int) -> int:
        if eid in ("p0/0", "p1/0"):
            entered.set()
            await gate.wait()  # the function is still working on it when the revocation comes
            finished.append(eid)
            return 503 if eid == "p0/0" else 204
        return 204

    drv, gw = _driver(src, held, attempts=10_000)
    src.put(Msg("p0", 0), Msg("p0", 1), Msg("p1", 0))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: gw.calls.get("p0/0") == 1 and gw.calls.get("p1/0") == 1, what="both attempts running")
    assert src.revoke is not None
    revoking = asyncio.create_task(src.revoke(["p0", "p1"]))
    await asyncio.sleep(0.3)  # longer than REVOKE_MARGIN: only delivery.timeout (5 s) + margin cuts it
    assert not revoking.done(), "revocation must wait for the attempt in flight, not cancel it"
    gate.set()
    await asyncio.wait_for(revoking, 5)
    assert sorted(finished) == ["p0/0", "p1/0"], "an attempt in flight was cancelled"
    await asyncio.sleep(0.1)
    assert gw.calls["p0/0"] == 1, "a revoked item started another attempt"
    assert "p0/1" not in gw.calls, "a queued event of the revoked partition ran"
    assert "p0/0" not in src.acked and src.position("p0") is None, "failed while revoked: left unsettled"
    assert src.acked == ["p1/0"], "delivered while revoked: settled"
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_revocation_cuts_a_retry_backoff_short() -> None:
    src = FakeSource()

    async def failing(eid: str, n: int) -> int:
        return 503

    drv, gw = _driver(src, failing, attempts=10_000)
    drv.pipeline.backoff.delay = lambda n, retry_after=None: 60.0  # type: ignore[method-assign]
    src.put(Msg("p", 0))
    run = asyncio.create_task(drv.run(5))
    await _until(lambda: gw.calls.get("p/0") == 1, what="the first attempt")
    await asyncio.sleep(0.05)  # failed at once: now in its 60 s backoff
    assert src.revoke is not None
    started = time.monotonic()
    await asyncio.wait_for(src.revoke(["p"]), 5)
    assert time.monotonic() - started < 0.5, "a backoff sleep must end at once on revocation"
    assert gw.calls["p/0"] == 1
    assert src.acked == [] and src.position("p") is None, "left unsettled: the next owner delivers it"
    await asyncio.sleep(0.05)
    assert gw.calls["p/0"] == 1
    drv.stop()
    await asyncio.wait_for(run, 5)


async def test_stop_while_connecting_returns_at_once() -> None:
    src = FakeSource()
    hang = asyncio.Event()

    async def slow_open(revoke: Revoke) -> None:
        await hang.wait()

    src.open = slow_open  # type: ignore[method-assign]
    drv, _ = _driver(src)
    run = asyncio.create_task(drv.run(5))
    await asyncio.sleep(0.05)
    drv.stop()
    await asyncio.wait_for(run, 1)
    assert src.closes == 1
