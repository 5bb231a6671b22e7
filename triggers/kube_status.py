"""Trigger `status`, written through the status subresource from the reconciler's outcomes.

What is written: `observedGeneration`, `source` (`kafka:orders`), `function`, and the conditions `Ready`
and `Degraded` (`reason`, `message`, `lastTransitionTime`, which only moves when the condition's status
does). A write happens when a condition or the generation changes; other changes (a message) at most
every `min_interval` (5 s) per trigger; nothing is written when the object already says it. Merge patches;
a failed write (conflict, API unreachable) is retried. A change of the Ready reason also records an
`events.k8s.io/v1` Event. Only the replica for which `is_leader()` is true writes (eventbus.kube_controller
elects it with a Lease), so replicas do not fight over the same fields.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from connectors.kube import KubeApiError, now_rfc3339
from triggers.reconciler import Outcome, Reconciler
from triggers.trigger_health import Health, HealthMonitor

log = logging.getLogger("eventbus.status")

CONTROLLER_NAME = "eventbus.dev/controller"
STARTING_GRACE = 1.0
"""Seconds a trigger may spend starting before `Ready=False, reason=Starting` is written."""


class StatusApi(Protocol):
    async def patch_trigger_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...

    async def create_event(self, regarding: dict[str, Any], *, type_: str, reason: str, note: str,
                           action: str, controller: str, instance: str) -> None: ...


def _condition(type_: str, status: bool, reason: str, message: str, generation: int | None,
               previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    value = "True" if status else "False"
    moved = previous is None or previous.get("status") != value
    cond: dict[str, Any] = {"type": type_, "status": value, "reason": reason, "message": message,
                            "lastTransitionTime": now if previous is None or moved
                            else previous.get("lastTransitionTime", now)}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def desired_status(outcome: Outcome, current: dict[str, Any], now: str,
                   health: Health | None = None) -> dict[str, Any]:
    """The status fields this controller owns, given the object's `current` status (and, for a running
    trigger, what its counters say: `health`)."""
    previous = {c.get("type"): c for c in current.get("conditions") or [] if isinstance(c, dict)}
    if outcome.degraded:
        degraded, degraded_reason, degraded_message = True, outcome.reason, outcome.message
    elif health is not None and outcome.ready:
        degraded, degraded_reason, degraded_message = True, health.reason, health.message
    else:
        degraded, degraded_reason, degraded_message = False, "AsExpected", ""
    conditions = [
        _condition("Ready", outcome.ready, outcome.reason, outcome.message, outcome.generation,
                   previous.get("Ready"), now),
        _condition("Degraded", degraded, degraded_reason, degraded_message, outcome.generation,
                   previous.get("Degraded"), now),
    ]
    out: dict[str, Any] = {"source": outcome.source, "function": outcome.function, "conditions": conditions}
    if outcome.generation is not None:
        out["observedGeneration"] = outcome.generation
    return out


def _significant(status: dict[str, Any]) -> tuple[Any, ...]:
    """What must be written at once when it changes: generation, and each condition's status and reason."""
    conds = tuple((c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or [])
    return status.get("observedGeneration"), conds


class StatusWriter:
    """See the module doc. `changed(key)` is the reconciler's `on_change`."""

    def __init__(self, api: StatusApi, reconciler: Reconciler, *, instance: str,
                 is_leader: Callable[[], bool], min_interval: float = 5.0, concurrency: int = 16,
                 health: HealthMonitor | None = None,
                 extra: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.api = api
        self.reconciler = reconciler
        self.instance = instance
        self.is_leader = is_leader
        self.min_interval = min_interval
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._last_write: dict[str, float] = {}
        self._written: dict[str, tuple[Any, dict[str, Any]]] = {}  # uid and what we last wrote (the watch may
        # lag behind it); a trigger deleted and created again under the same name has a new uid
        self._sem = asyncio.Semaphore(concurrency)
        self._event_slots = asyncio.Semaphore(4)
        self.writes = 0
        self._events: set[asyncio.Task[None]] = set()
        self.health = health
        self.extra = extra  # more status fields per trigger (the scaling row: lag, desiredReplicas, active)
        self._health: dict[str, Health | None] = {}
        self._last_round = 0.0
        self.tick = 0.1  # how often readiness is re-read (Starting -> Running) and deferred writes retried

    def changed(self, key: str) -> None:
        self._dirty.add(key)
        self._wake.set()

    def mark_all(self) -> None:
        """Leadership just moved here: compare every trigger's status with what it should say."""
        self._dirty.update(self.reconciler.keys())
        self._written.clear()
        self._wake.set()

    async def run(self) -> None:
        was_leader = False
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick)
            except TimeoutError:
                pass
            self._wake.clear()
            periodic = self.extra is not None and time.monotonic() - self._last_round >= self.min_interval
            if periodic:
                self._last_round = time.monotonic()
            for key in self.reconciler.keys():  # Starting -> Running (a controller became ready)
                if self.reconciler.refresh(key) or periodic:
                    self._dirty.add(key)
                if self.health is not None:
                    h = self.health.check(key)
                    if h != self._health.get(key):
                        self._health[key] = h
                        self._dirty.add(key)
            leader = self.is_leader()
            if leader and not was_leader:
                self.mark_all()
            was_leader = leader
            if not leader or not self._dirty:
                continue
            keys, self._dirty = self._dirty, set()
            await asyncio.gather(*(self._write(k) for k in keys))

    async def _write(self, key: str) -> None:
        async with self._sem:
            try:
                await self._write_one(key)
            except KubeApiError as exc:
                if exc.not_found:
                    return
                log.warning("status write failed; retrying", extra={"trigger": key, "error": str(exc)})
                self._dirty.add(key)  # conflicts and outages: the next round retries
            except Exception:
                log.exception("status write failed", extra={"trigger": key})
                self._dirty.add(key)

    async def _write_one(self, key: str) -> None:
        outcome = self.reconciler.outcome(key)
        obj = self.reconciler.object(key)
        if outcome is None or obj is None:
            return
        if outcome.reason == "Starting" and time.monotonic() - outcome.since < STARTING_GRACE:
            self._dirty.add(key)  # most triggers are Running within moments: one write instead of two
            return
        uid = (obj.get("metadata") or {}).get("uid")
        cached = self._written.get(key)
        current = cached[1] if cached is not None and cached[0] == uid else obj.get("status") or {}
        want = desired_status(outcome, current, now_rfc3339(), self._health.get(key))
        if self.extra is not None and outcome.ready:
            want.update(self.extra(key))  # not "significant": written at most every min_interval
        have = {k: current.get(k) for k in want}
        if have == want:
            return
        urgent = _significant(want) != _significant(have)
        now = time.monotonic()
        if not urgent and now - self._last_write.get(key, 0.0) < self.min_interval:
            self._dirty.add(key)  # later: at most every min_interval for non-condition changes
            return
        ns, name = key.split("/", 1)
        await self.api.patch_trigger_status(ns, name, want)
        self.writes += 1
        self._last_write[key] = now
        self._written[key] = (uid, {**current, **want})
        old_reason = next((c.get("reason") for c in current.get("conditions") or []
                           if isinstance(c, dict) and c.get("type") == "Ready"), None)
        if old_reason != outcome.reason:  # in the background: the status of other triggers comes first
            task = asyncio.create_task(self._event(obj, outcome))
            self._events.add(task)
            task.add_done_callback(self._events.discard)

    async def _event(self, obj: dict[str, Any], outcome: Outcome) -> None:
        note = outcome.message or f"trigger is {outcome.reason}"
        try:
            async with self._event_slots:
                await self.api.create_event(obj, type_="Normal" if outcome.ready or outcome.reason == "Starting"
                                            else "Warning", reason=outcome.reason, note=note, action="Reconcile",
                                            controller=CONTROLLER_NAME, instance=self.instance)
        except KubeApiError as exc:  # an Event is a courtesy: never retried, never fatal
            log.warning("event not recorded", extra={"error": str(exc)})
