"""Cron triggers against the real NATS server, in real time: replicas, kill -9, catch-up, policies."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from pathlib import Path

import nats
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from connectors.nats_kv_lock import DEFAULT_BUCKET, trigger_key
from eventbus.runtime import Runtime, RuntimeConfig
from schemas.loader import parse_triggers
from schemas.trigger import Trigger
from tests.integration.support import FunctionServer, RuntimeProcess
from triggers.metrics import Metrics

pytestmark = pytest.mark.integration


def cron_yaml(name: str, url: str, **cron: str) -> str:
    fields = {"schedule": "'* * * * * *'", "leaseDuration": "3s", **cron}
    body = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return (f"apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {{name: {name}, namespace: crontest}}\n"
            f"spec:\n  source: {{cron: {{{body}}}}}\n  function: {{url: '{url}'}}\n"
            f"  delivery: {{timeout: 10s, retry: {{attempts: 1}}}}\n")


async def holder_pid(nats_url: str, name: str) -> int | None:
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().key_value(DEFAULT_BUCKET)
        entry = await kv.get(trigger_key(f"crontest/{name}"))
        assert entry.value is not None
        holder = json.loads(entry.value)["holder"]
        return int(holder.split("/")[1]) if holder else None
    finally:
        await nc.close()


def procs(tmp_path: Path, spec: Path, fn: FunctionServer, nats_url: str, n: int) -> list[RuntimeProcess]:
    return [RuntimeProcess(spec, fn.url, "127.0.0.1:1", tmp_path / f"rt{i}.log", extra=["--nats", nats_url]).start()
            for i in range(n)]


async def test_three_runtimes_fire_every_tick_exactly_once(
    nats_url: str, fn: FunctionServer, unique_name: str, tmp_path: Path
) -> None:
    spec = tmp_path / "cron.yaml"
    spec.write_text(cron_yaml(unique_name, fn.url))
    runtimes = procs(tmp_path, spec, fn, nats_url, 3)
    try:
        await fn.wait_for(lambda: len(fn.delivered_ids) >= 62, timeout=90, what="62 ticks")
    finally:
        codes = await asyncio.gather(*(r.aterminate() for r in runtimes), return_exceptions=True)
        for r in runtimes:
            r.close()
    assert codes == [0, 0, 0], f"exit codes after SIGTERM: {codes}"
    ids = fn.delivered_ids
    counts = collections.Counter(ids)
    doubled = [i for i, c in counts.items() if c > 1]
    assert not doubled, f"ticks fired more than once: {doubled}"
    stamps = sorted(time.mktime(time.strptime(i.rsplit("/", 1)[1], "%Y-%m-%dT%H:%M:%SZ")) for i in counts)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert set(gaps) == {1.0}, f"missed ticks: gaps {sorted(set(gaps))}"
    assert all(i.startswith(f"crontest/{unique_name}/") for i in ids)


async def test_kill9_leader_next_tick_fired_by_another_within_lease(
    nats_url: str, fn: FunctionServer, unique_name: str, tmp_path: Path
) -> None:
    spec = tmp_path / "cron.yaml"
    spec.write_text(cron_yaml(unique_name, fn.url))
    runtimes = procs(tmp_path, spec, fn, nats_url, 2)
    try:
        await fn.wait_for(lambda: len(fn.delivered_ids) >= 3, timeout=30, what="3 ticks")
        pid = await holder_pid(nats_url, unique_name)
        leader = next(r for r in runtimes if r.proc is not None and r.proc.pid == pid)
        other = next(r for r in runtimes if r is not leader)
        leader.kill9()
        killed_at = time.time()
        before = len(fn.delivered_ids)
        await fn.wait_for(lambda: len(fn.delivered_ids) > before, timeout=10, what="ticks after kill")
        first_after = time.time()
        assert first_after - killed_at < 3.0 + 1.2, "takeover took longer than the lease (3s) plus one tick"
        assert other.proc is not None
        assert await holder_pid(nats_url, unique_name) == other.proc.pid
        stamps = [i.rsplit("/", 1)[1] for i in fn.delivered_ids]
        assert len(set(stamps[before:])) == len(stamps[before:])
    finally:
        for r in runtimes:
            r.close()


def load(text: str) -> Trigger:
    return parse_triggers(text, "test.yaml")[0]


async def test_catch_up_after_stop_within_deadline(
    nats_url: str, fn: FunctionServer, unique_name: str
) -> None:
    trigger = load(cron_yaml(unique_name, fn.url, startingDeadline="3s", catchUp="{maxTicks: 10}"))
    rt = Runtime(RuntimeConfig(nats=nats_url), metrics=Metrics(CollectorRegistry()))
    await rt.start([trigger])
    await fn.wait_for(lambda: len(fn.delivered_ids) >= 2, timeout=10, what="2 ticks")
    await rt.stop()
    stopped = len(fn.delivered_ids)
    await asyncio.sleep(6.2)  # ~6 ticks pass; only those within 3s of the restart are caught up
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(nats=nats_url), metrics=Metrics(registry))
    await rt.start([trigger])
    await fn.wait_for(lambda: len(fn.delivered_ids) >= stopped + 5, timeout=10, what="catch-up")
    await rt.stop()
    stamps = sorted({i.rsplit("/", 1)[1] for i in fn.delivered_ids})
    assert len(stamps) == len(fn.delivered_ids), "a tick fired twice"
    missed = registry.get_sample_value("eventbus_cron_skipped_total",
                                       {"trigger": trigger.key, "reason": "missed"})
    assert missed is not None and 1 <= missed <= 4
    # the caught-up ticks are the newest missed ones: no gap between them and the live ones
    secs = [time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ")) for s in stamps[stopped:]]
    assert all(b - a == 1 for a, b in itertools.pairwise(secs))


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
async def test_slow_function_policies(nats_url: str, unique_name: str, policy: str) -> None:
    async def slow(request: web.Request, body: bytes, n: int) -> web.StreamResponse:
        await asyncio.sleep(2.5)
        return web.Response(status=204)

    fn = await FunctionServer(behaviour=slow).start()
    trigger = load(cron_yaml(unique_name, fn.url, concurrencyPolicy=policy))
    registry = CollectorRegistry()
    rt = Runtime(RuntimeConfig(nats=nats_url), metrics=Metrics(registry))
    try:
        await rt.start([trigger])
        await asyncio.sleep(7.2)
        await rt.stop()
    finally:
        await fn.stop()
    skipped = registry.get_sample_value("eventbus_cron_skipped_total",
                                        {"trigger": trigger.key, "reason": policy.lower().replace("replace",
                                                                                                  "replaced")})
    received = [r.ce_id for r in fn.received]
    if policy == "Forbid":
        assert 2 <= len(received) <= 3, received  # one every 3 s: each blocks the next two ticks
        assert skipped is not None and skipped >= 4
    else:
        assert len(received) >= 6, received  # every tick starts, cancelling the previous one
        assert skipped is not None and skipped >= 5  # the runtime cancelled the previous delivery each time
        assert len(set(received)) == len(received)
