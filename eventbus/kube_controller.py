"""`eventbus run --kubernetes`: run the Trigger resources of a cluster, report their status, share them
between replicas.

Wiring only: a `Runtime` runs the triggers; an `Informer` per watched namespace (or one for all) lists and
watches Triggers into the `Reconciler`, which starts, restarts and stops them; the `StatusWriter` reports
back. High availability: every replica runs every trigger. Kafka and JetStream triggers share their
consumer group (partitions are spread), HTTP triggers serve on every replica behind the Service, and cron
triggers elect one scheduler per trigger with a `coordination.k8s.io/v1` Lease (`triggers.leader.CasLock`
over `connectors.kube_lease.LeaseStore`: the same guarantees as the NATS KV lock). One replica, the holder
of the `eventbus-status` Lease, writes status and Events.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from connectors.kube import KubeClient, KubeConfigError
from connectors.kube_lease import LeaseStore, lease_name
from eventbus.runtime import TRANSIENT, Runtime, RuntimeConfig
from schemas.trigger import Trigger
from triggers.informer import Informer
from triggers.kept_locks import LockKeeper
from triggers.kube_status import StatusWriter
from triggers.leader import CasLock, SchedulerLock, default_holder
from triggers.reconciler import Reconciler
from triggers.trigger_health import HealthMonitor

log = logging.getLogger("eventbus.kube")

STATUS_LEASE = "eventbus-status"
STATUS_LEASE_SECONDS_ENV = "EVENTBUS_STATUS_LEASE"
"""Seconds of the status writer's lease (default 10): how long a dead writer's replacement waits."""
WATCH_TIMEOUT_ENV = "EVENTBUS_KUBE_WATCH_TIMEOUT"
"""Seconds a watch lasts before the server ends it (default 60); silence for 5 s longer means relist."""


@dataclass
class KubeOptions:
    namespaces: list[str] = field(default_factory=list)  # empty: every namespace
    kubeconfig: str | None = None
    lease_namespace: str | None = None  # where the status Lease lives (default $POD_NAMESPACE, else the first ns)
    status_lease: float = 10.0
    watch_timeout: int = 60


class StatusLeader:
    """Holds (or waits for) the status writer's Lease; `is_leader()` says whether this replica writes."""

    def __init__(self, lock: CasLock) -> None:
        self.lock = lock
        self._leader = False

    def is_leader(self) -> bool:
        return self._leader

    async def run(self) -> None:
        while True:
            try:
                self._leader = await self.lock.acquire() is not None
            except Exception as exc:  # API unreachable: stop writing rather than risk two writers
                self._leader = False
                log.warning("status lease unavailable", extra={"error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(self.lock.lease_duration / 3)

    async def release(self) -> None:
        self._leader = False
        try:
            await self.lock.release()
        except Exception as exc:
            log.warning("status lease release failed", extra={"error": f"{type(exc).__name__}: {exc}"})


class KubeController:
    """One replica: the runtime plus the informers, reconciler, status writer and leases around it."""

    def __init__(self, config: RuntimeConfig, kube: KubeClient, options: KubeOptions) -> None:
        self.kube = kube
        self.options = options
        self.identity = default_holder()
        config.scheduler_lock = self._cron_lock
        self.kept_locks = LockKeeper()
        self.runtime = Runtime(config)
        lease_ns = options.lease_namespace or os.environ.get("POD_NAMESPACE") or (
            options.namespaces[0] if options.namespaces else "default")
        self.leader = StatusLeader(CasLock(LeaseStore(kube, lease_ns), STATUS_LEASE, holder=self.identity,
                                           lease_duration=options.status_lease))
        self.reconciler = Reconciler(self.runtime, kube, on_change=self._changed, transient=TRANSIENT)
        self.status = StatusWriter(kube, self.reconciler, instance=self.identity, is_leader=self.leader.is_leader,
                                   health=HealthMonitor(self.runtime.metrics.registry), extra=self._scaling_row)
        namespaces: list[str | None] = list(dict.fromkeys(options.namespaces)) or [None]
        self.informers = [Informer(kube, self.reconciler, ns, watch_timeout=options.watch_timeout)
                          for ns in namespaces]
        self._tasks: list[asyncio.Task[None]] = []

    def _scaling_row(self, key: str) -> dict[str, Any]:
        """The scaling columns of `status` (lag, desiredReplicas, active) from the lag watcher, once read."""
        hint = self.runtime.scaling.board.get(key)
        if hint is None:
            return {}
        return {"lag": hint.lag, "desiredReplicas": hint.desired_replicas, "active": hint.active}

    def _changed(self, key: str) -> None:
        self.status.changed(key)

    async def _cron_lock(self, trigger: Trigger) -> SchedulerLock:
        """The trigger's Lease lock; kept across a restart of the trigger (see triggers.kept_locks)."""
        src = trigger.spec.source.cron
        assert src is not None
        meta = trigger.metadata

        def make() -> CasLock:
            store = LeaseStore(self.kube, meta.namespace)
            return CasLock(store, lease_name("eventbus-cron", meta.name), holder=self.identity,
                           lease_duration=src.lease_duration)

        return self.kept_locks.lock(trigger.key, (meta.uid, src.lease_duration), make)

    def ready(self) -> bool:
        return all(i.synced.is_set() for i in self.informers) and self.runtime.ready()

    async def start(self) -> None:
        await self.runtime.start([])
        self._tasks = [asyncio.create_task(self.leader.run(), name="status-lease"),
                       asyncio.create_task(self.status.run(), name="status-writer"),
                       *(asyncio.create_task(i.run(), name=f"informer:{i.namespace or '*'}")
                         for i in self.informers)]
        log.info("watching Trigger resources", extra={"namespaces": self.options.namespaces or ["*"],
                                                      "identity": self.identity})

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.reconciler.close()
        await self.leader.release()
        self.kept_locks.closing = True  # stopping triggers release their leases at once now
        await self.runtime.stop()
        self.kube.close()

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        log.info("stopping: draining in-flight events", extra={"grace_s": self.runtime.config.grace})
        await self.stop()


def run_kubernetes(args: argparse.Namespace, config: RuntimeConfig) -> int:
    """The body of `eventbus run --kubernetes [--namespace NS]... [--kubeconfig F] [--gateway URL]`; `config`
    is what `eventbus run` built from its other flags (gateway, ports, grace, ...)."""
    options = KubeOptions(namespaces=list(args.namespace), kubeconfig=args.kubeconfig,
                          status_lease=float(os.environ.get(STATUS_LEASE_SECONDS_ENV, "10")),
                          watch_timeout=int(os.environ.get(WATCH_TIMEOUT_ENV, "60")))

    async def main() -> None:
        kube = KubeClient.from_kubeconfig(options.kubeconfig)
        await KubeController(config, kube, options).run_until_signal()

    try:
        from eventbus.loop import run as run_loop

        run_loop(main())
    except KubeConfigError as exc:
        log.error(f"eventbus run --kubernetes: {exc}")
        return 1
    except Exception as exc:
        log.error(f"eventbus run --kubernetes failed: {type(exc).__name__}: {exc}")
        return 1
    return 0
