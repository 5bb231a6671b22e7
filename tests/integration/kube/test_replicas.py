"""Two `eventbus run --kubernetes` replicas: cron fires once per tick (a Lease per trigger), Kafka partitions
are shared by the consumer group, one replica writes status, and kill -9 of a Lease holder hands over."""

from __future__ import annotations

import asyncio
import collections
import time
from datetime import datetime
from pathlib import Path

import pytest

from connectors.kube import KubeClient
from connectors.kube_lease import lease_name
from eventbus.kube_controller import STATUS_LEASE, STATUS_LEASE_SECONDS_ENV
from tests.integration.kube.support import ControllerProcess, create_trigger, patch_trigger, wait_status
from tests.integration.kube.test_controller import cron, kafka
from tests.integration.support import FunctionServer, create_topic, group_members

pytestmark = pytest.mark.integration


async def lease_holder_pid(kube: KubeClient, namespace: str, name: str) -> int | None:
    lease = await kube.get_lease(namespace, name)
    holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
    return int(holder.split("/")[1]) if holder else None


async def test_two_replicas_share_triggers_and_survive_kill9_of_a_lease_holder(
    kube: KubeClient, namespace: str, fn: FunctionServer, kafka_bootstrap: str, kubeconfig: str,
    unique_name: str, tmp_path: Path,
) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, partitions=2)
    env = {STATUS_LEASE_SECONDS_ENV: "3"}
    ctls = [ControllerProcess(kubeconfig, namespace, fn.url, tmp_path / f"ctl{i}.log",
                              extra=["--kafka", kafka_bootstrap], env=env).start() for i in range(2)]
    try:
        await create_trigger(kube, namespace, cron("tick", "tick"))
        await create_trigger(kube, namespace, kafka("orders", topic, "orders"))
        await wait_status(kube, namespace, "tick", reason="Running", generation=1, timeout=30)
        await wait_status(kube, namespace, "orders", reason="Running", generation=1, timeout=30)

        # Kafka: both replicas in one consumer group, one partition each
        group = f"eventbus-{namespace}-orders"
        deadline = time.monotonic() + 30
        members: list[list[int]] = []
        while time.monotonic() < deadline:
            members = await group_members(kafka_bootstrap, group)
            if sorted(members) == [[0], [1]]:
                break
            await asyncio.sleep(0.5)
        assert sorted(members) == [[0], [1]], members

        # cron: once per tick across both replicas
        await asyncio.sleep(5)
        ids = [r.ce_id for r in fn.received if r.path == f"/{namespace}/tick"]
        doubled = [i for i, n in collections.Counter(ids).items() if n > 1]
        assert len(ids) >= 4 and not doubled, (ids, doubled)

        # one status writer: every Event comes from the same instance, the status Lease holder
        events = await kube._call(kube.events.list_namespaced_event, namespace)
        writers = {e["reportingInstance"] for e in events["items"]}
        status_holder = await lease_holder_pid(kube, namespace, STATUS_LEASE)
        assert len(writers) == 1 and status_holder is not None, writers
        assert int(next(iter(writers)).split("/")[1]) == status_holder

        # kill -9 the cron Lease holder: the other replica fires the next ticks within the lease (3 s)
        pid = await lease_holder_pid(kube, namespace, lease_name("eventbus-cron", "tick"))
        [victim] = [c for c in ctls if c.pid == pid]
        victim.kill9()
        killed_at = time.time()
        n0 = len(fn.received)
        await fn.wait_for(lambda: any(r.path == f"/{namespace}/tick" for r in fn.received[n0:]), timeout=8,
                          what="a tick after kill -9 of the leader")
        assert time.time() - killed_at < 3 + 1.5
        [survivor] = [c for c in ctls if c is not victim]
        assert await lease_holder_pid(kube, namespace, lease_name("eventbus-cron", "tick")) == survivor.pid

        # the status writer too, if it was the victim: an edit is still reported
        await patch_trigger(kube, namespace, "orders", {"spec": {"function": {"name": "orders2"}}})
        await wait_status(kube, namespace, "orders", reason="Running", generation=2, timeout=3 + 3)
        assert await lease_holder_pid(kube, namespace, STATUS_LEASE) == survivor.pid
        await asyncio.sleep(3)
        ids = [r.ce_id for r in fn.received if r.path == f"/{namespace}/tick"]
        doubled = [i for i, n in collections.Counter(ids).items() if n > 1]
        # The one tick the victim may have claimed and dispatched but not settled when it was killed is
        # re-fired by the new leader with the same id (at least once, same id: the documented guarantee).
        # Any other tick fired twice is a double fire.
        in_flight_at_kill = {i for i in doubled if killed_at - 2.5 <= _scheduled(i) <= killed_at + 0.5}
        assert len(in_flight_at_kill) <= 1 and set(doubled) == in_flight_at_kill, (doubled, killed_at)
        code = await survivor.aterminate()
        assert code == 0, survivor.log_text()[-3000:]
    finally:
        for c in ctls:
            c.close()


def _scheduled(tick_id: str) -> float:
    """The scheduled time of a cron tick from its id `<namespace>/<name>/<ISO time>`."""
    return datetime.fromisoformat(tick_id.rsplit("/", 1)[1].replace("Z", "+00:00")).timestamp()
