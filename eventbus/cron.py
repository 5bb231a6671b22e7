"""Cron in the application: `eventbus cron next`, and how the runtime builds a cron controller.

The runtime's cron wiring lives here (not in `triggers/`) because it needs the `Runtime`'s shared NATS
connection and metrics registry: with NATS configured, leases and tick ledgers go to a JetStream KV
bucket shared by every replica; without, an in-process lock keeps one runtime correct, and a warning says
that several replicas would each fire every tick.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TextIO

from connectors.nats_client import NatsConfigError
from connectors.nats_client import resolve_servers as resolve_nats_servers
from connectors.nats_kv_lock import DEFAULT_BUCKET, NatsKvStore, trigger_key
from schemas.cron import next_fires, parse_schedule
from schemas.trigger import Trigger
from triggers.cron_metrics import cron_metrics
from triggers.cron_trigger import CronTrigger
from triggers.delivery import Pipeline
from triggers.leader import CasLock, SchedulerLock, local_lock

if TYPE_CHECKING:
    from eventbus.runtime import Runtime

log = logging.getLogger("eventbus.cron")

BUCKET_ENV = "EVENTBUS_CRON_BUCKET"


async def cron_controller(rt: Runtime, trigger: Trigger, pipeline: Pipeline) -> CronTrigger:
    """The runtime's factory for `spec.source.cron` triggers (registered in `eventbus.runtime.CONTROLLERS`)."""
    src = trigger.spec.source.cron
    assert src is not None
    try:
        resolve_nats_servers([], rt.config.nats)
        shared = True
    except NatsConfigError:
        shared = False
    bucket = os.environ.get(BUCKET_ENV, DEFAULT_BUCKET)

    async def lock() -> SchedulerLock:
        if rt.config.scheduler_lock is not None:  # e.g. a coordination.k8s.io Lease (eventbus.kube_controller)
            return await rt.config.scheduler_lock(trigger)
        if not shared:
            log.warning("no NATS configured (--nats / EVENTBUS_NATS_URL): cron trigger uses an in-process "
                        "lock; several replicas of this runtime would each fire every tick",
                        extra={"trigger": trigger.key})
            return local_lock(trigger.key, lease_duration=src.lease_duration)
        store = await NatsKvStore.open(await rt.nats_client(), bucket)
        return CasLock(store, trigger_key(trigger.key), lease_duration=src.lease_duration)

    return CronTrigger(trigger, pipeline, lock=lock, metrics=cron_metrics(rt.metrics.registry))


def print_next(triggers: list[Trigger], count: int, *, now: datetime | None = None,
               out: TextIO = sys.stdout) -> int:
    """Print the next `count` firing times of each cron trigger, in its zone and in UTC."""
    start = now or datetime.now(UTC)
    crons = [t for t in triggers if t.spec.source.cron is not None]
    if not crons:
        print("no cron triggers", file=out)
        return 0
    for t in crons:
        src = t.spec.source.cron
        assert src is not None
        schedule = parse_schedule(src.schedule, src.timezone)
        flags = " (suspended)" if src.suspend else ""
        print(f"{t.key}  schedule={src.schedule!r} timezone={src.timezone}{flags}", file=out)
        from zoneinfo import ZoneInfo

        zone = ZoneInfo(src.timezone)
        for tick in next_fires(schedule, start, count):
            local = tick.astimezone(zone).isoformat()
            utc = tick.isoformat().replace("+00:00", "Z")
            print(f"  {local:<32} {utc}", file=out)
    return 0


def cron_next(path: str, count: int) -> int:
    """`eventbus cron next -f PATH [--count N]`: exit 1 with every problem if the specs do not load."""
    from eventbus.specs import load_or_report

    if count < 1:
        print("--count must be at least 1", file=sys.stderr)
        return 2
    triggers = load_or_report(path)
    if triggers is None:
        return 1
    return print_next(triggers, count)
