"""The reconciler: brings the running triggers in line with the Trigger resources it is shown.

Level-triggered and per trigger: `apply(obj)` records the newest object of a trigger and a worker for that
trigger (one at a time per key, any number of keys at once) makes the runner match it: start it; restart
it when `metadata.generation` changes; stop it on `delete`. A status-only change (same generation) does
nothing. What happened is kept per trigger as an `Outcome` (the `Ready` condition's reason and message),
which the status writer publishes; `on_change(key)` tells it when that changes.

Nothing a user writes can crash it: a spec the models reject is not run (`InvalidSpec`, with each field
path and message), a missing Secret is retried every few seconds (`SecretNotFound`), a broker that cannot
be reached is retried with backoff (`BrokerUnreachable`), and any other failure to start is retried too
(`StartFailed`), each without touching the other triggers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from schemas.errors import TriggerSpecError
from schemas.loader import parse_triggers
from schemas.trigger import Trigger
from triggers.secret_refs import SecretNotFound, SecretReader, resolve_secrets

log = logging.getLogger("eventbus.reconciler")

SECRET_RETRY = 2.0
"""Seconds between looks for a Secret that a trigger references and that does not exist yet."""
MAX_BACKOFF = 30.0


class Started(Protocol):
    """What the runner hands back for a started trigger: its readiness."""

    @property
    def ready(self) -> Any: ...  # an asyncio.Event (possibly of another loop: only is_set() is used)


class Runner(Protocol):
    """Starts and stops triggers (the `eventbus.runtime.Runtime`)."""

    async def add(self, trigger: Trigger) -> Any: ...

    async def remove(self, key: str) -> None: ...


@dataclass
class Outcome:
    """The result of the last reconcile of one trigger: what `status` reports."""

    generation: int | None
    reason: str  # Running, Starting, InvalidSpec, SecretNotFound, BrokerUnreachable, StartFailed
    message: str = ""
    source: str = ""
    function: str = ""
    controller: Any = None  # the runner's controller when started
    since: float = field(default_factory=time.monotonic)  # when this outcome was reached

    @property
    def ready(self) -> bool:
        return self.reason == "Running"

    @property
    def degraded(self) -> bool:
        return self.reason in ("BrokerUnreachable", "StartFailed")


@dataclass
class _Entry:
    obj: dict[str, Any]
    uid: str | None = None
    generation: int | None = None
    outcome: Outcome | None = None
    running: bool = False
    retry: asyncio.Task[None] | None = None
    backoff: float = 1.0
    dirty: bool = True  # the object needs a reconcile (new generation, or a retry is due)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _validate(obj: dict[str, Any], key: str) -> Trigger:
    """The Trigger model of an API object. The direct pydantic check is fast (20 us); only a rejected object
    goes through the spec loader (1-2 ms), for its messages that name each field the way `validate` does."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}  # big, not ours
    doc = {**obj, "metadata": meta, "status": None}
    try:
        return Trigger.model_validate(doc, by_alias=True, by_name=False)
    except ValidationError:
        [trigger] = parse_triggers(json.dumps(doc), key)  # raises TriggerSpecError with the problems
        return trigger


def trigger_key(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"


def _function_of(obj: dict[str, Any]) -> str:
    fn = (obj.get("spec") or {}).get("function") or {}
    if not isinstance(fn, dict):
        return ""
    if fn.get("url"):
        return str(fn["url"])
    if fn.get("name"):
        return f"{fn['namespace']}/{fn['name']}" if fn.get("namespace") else str(fn["name"])
    return ""


def _source_of(obj: dict[str, Any]) -> str:
    src = (obj.get("spec") or {}).get("source") or {}
    return ",".join(sorted(src)) if isinstance(src, dict) else ""


class Reconciler:
    """See the module doc. `transient` lists the exceptions that mean "a broker is unreachable"."""

    def __init__(self, runner: Runner, secrets: SecretReader, *, on_change: Callable[[str], None] | None = None,
                 transient: tuple[type[BaseException], ...] = (ConnectionError, OSError, TimeoutError)) -> None:
        self.runner = runner
        self.secrets = secrets
        self.on_change = on_change or (lambda key: None)
        self.transient = transient
        self._entries: dict[str, _Entry] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- what the status writer reads ---------------------------------------------------------

    def outcome(self, key: str) -> Outcome | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.outcome

    def object(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.obj

    def keys(self) -> list[str]:
        return list(self._entries)

    # --- input --------------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> None:
        """An object from a list or an ADDED/MODIFIED event; reconciled in the background."""
        key = trigger_key(obj)
        meta = obj.get("metadata") or {}
        entry = self._entries.get(key)
        generation = meta.get("generation")
        if entry is None:
            entry = self._entries[key] = _Entry(obj)
        elif entry.uid != meta.get("uid") or entry.generation != generation:
            entry.dirty = True
        entry.obj = obj
        if entry.dirty:
            self._spawn(self._reconcile(key))

    def delete(self, key: str) -> None:
        """A DELETED event: stop the trigger and forget it."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        if entry.retry is not None and not entry.lock.locked():
            entry.retry.cancel()  # (one holding the lock is mid-start: _stop waits for it, then stops it)
        self._spawn(self._stop(key, entry))

    def resync(self, objs: list[dict[str, Any]], namespace: str | None) -> None:
        """A fresh list of `namespace` (None: all): triggers no longer listed are stopped."""
        seen = {trigger_key(o) for o in objs}
        for key in list(self._entries):
            ns = key.split("/", 1)[0]
            if (namespace is None or ns == namespace) and key not in seen:
                self.delete(key)
        for obj in objs:
            self.apply(obj)

    async def idle(self) -> None:
        """Wait until no reconcile is in progress (tests, shutdown)."""
        while self._workers:
            await asyncio.gather(*list(self._workers), return_exceptions=True)

    async def close(self) -> None:
        """Stop reconciling (the runtime stops the triggers themselves)."""
        self._closed = True
        for entry in self._entries.values():
            if entry.retry is not None:
                entry.retry.cancel()
        await self.idle()

    # --- work ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._workers.add(task)
        task.add_done_callback(self._workers.discard)

    async def _stop(self, key: str, entry: _Entry) -> None:
        async with entry.lock:
            if entry.running:
                entry.running = False
                await self._remove(key)
            log.info("trigger deleted", extra={"trigger": key})

    async def _remove(self, key: str) -> None:
        try:
            await self.runner.remove(key)
        except Exception as exc:  # never let one trigger's stop break the controller
            log.error("stopping trigger failed", extra={"trigger": key, "error": f"{type(exc).__name__}: {exc}"})

    async def _reconcile(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        async with entry.lock:
            if self._entries.get(key) is not entry or not entry.dirty or self._closed:
                return
            try:
                await self._reconcile_locked(key, entry)
            except Exception as exc:  # a bug must not take the controller down: report and retry
                log.exception("reconcile failed", extra={"trigger": key})
                self._set(key, entry, Outcome(entry.generation, "StartFailed", f"{type(exc).__name__}: {exc}"))
                self._retry_later(key, entry, entry.backoff)

    async def _reconcile_locked(self, key: str, entry: _Entry) -> None:
        obj = entry.obj
        meta = obj.get("metadata") or {}
        entry.dirty = False
        entry.uid, entry.generation = meta.get("uid"), meta.get("generation")
        if entry.retry is not None and entry.retry is not asyncio.current_task():
            entry.retry.cancel()
            entry.retry = None
        gen = entry.generation
        summary, function = _source_of(obj), _function_of(obj)
        try:
            trigger = _validate(obj, key)
        except TriggerSpecError as exc:
            message = "; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in exc.problems)
            await self._halt(key, entry)
            self._set(key, entry, Outcome(gen, "InvalidSpec", message, summary, function))
            log.error("invalid trigger spec: not running it", extra={"trigger": key, "error": message})
            return
        summary = trigger.spec.source.summary
        try:
            resolved = await resolve_secrets(trigger, self.secrets)
        except SecretNotFound as exc:
            await self._halt(key, entry)
            self._set(key, entry, Outcome(gen, "SecretNotFound", str(exc), summary, function))
            self._retry_later(key, entry, SECRET_RETRY)
            return
        await self._halt(key, entry)
        try:
            controller = await self.runner.add(resolved)
        except self.transient as exc:
            self._set(key, entry, Outcome(gen, "BrokerUnreachable", f"{type(exc).__name__}: {exc}", summary,
                                          function))
            self._retry_later(key, entry, entry.backoff)
            return
        except Exception as exc:
            self._set(key, entry, Outcome(gen, "StartFailed", f"{type(exc).__name__}: {exc}", summary, function))
            self._retry_later(key, entry, entry.backoff)
            return
        entry.running = True
        entry.backoff = 1.0
        ready = getattr(controller, "ready", None)
        reason = "Running" if ready is None or ready.is_set() else "Starting"
        self._set(key, entry, Outcome(gen, reason, "", summary, function, controller))
        log.info("trigger reconciled", extra={"trigger": key, "generation": gen})

    async def _halt(self, key: str, entry: _Entry) -> None:
        if entry.running:
            entry.running = False
            await self._remove(key)

    def _set(self, key: str, entry: _Entry, outcome: Outcome) -> None:
        entry.outcome = outcome
        self.on_change(key)

    def refresh(self, key: str) -> bool:
        """Re-read a started trigger's readiness (Starting <-> Running); True if the outcome changed."""
        entry = self._entries.get(key)
        if entry is None or entry.outcome is None or entry.outcome.controller is None:
            return False
        out = entry.outcome
        ready = getattr(out.controller, "ready", None)
        reason = "Running" if ready is None or ready.is_set() else "Starting"
        if reason == out.reason:
            return False
        entry.outcome = Outcome(out.generation, reason, out.message, out.source, out.function, out.controller,
                                out.since)
        return True

    def _retry_later(self, key: str, entry: _Entry, delay: float) -> None:
        entry.backoff = min(entry.backoff * 2, MAX_BACKOFF)

        async def again() -> None:
            await asyncio.sleep(delay)
            if self._entries.get(key) is entry and not self._closed:
                entry.dirty = True
                await self._reconcile(key)

        entry.retry = asyncio.create_task(again(), name=f"retry:{key}")
