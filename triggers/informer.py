"""List, then watch, the Trigger resources of one namespace (or all), feeding the reconciler.

The usual informer loop: list (every trigger, and the list's resourceVersion), hand the list to the
reconciler (which stops what is no longer there), then watch from that resourceVersion. A watch that the
server ends on its timeout is resumed from the last resourceVersion seen. Anything else means events may
have been missed, so it relists: `410 Gone` (the resourceVersion is too old), a dropped connection, and a
silent watch (nothing at all, not even a bookmark, for longer than the watch timeout: the read times out).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from connectors.kube import KubeApiError, WatchEvent, WatchGone
from triggers.reconciler import Reconciler, trigger_key

log = logging.getLogger("eventbus.informer")


class TriggerSource(Protocol):
    async def list_triggers(self, namespace: str | None) -> tuple[list[dict[str, Any]], str]: ...

    def watch_triggers(self, namespace: str | None, resource_version: str,
                       timeout_seconds: int = 60) -> Any: ...  # AsyncIterator[WatchEvent]


class Informer:
    """Keeps `reconciler` fed with the triggers of `namespace` (None: every namespace) until cancelled."""

    def __init__(self, source: TriggerSource, reconciler: Reconciler, namespace: str | None, *,
                 watch_timeout: int = 60) -> None:
        self.source = source
        self.reconciler = reconciler
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self.synced = asyncio.Event()  # set after the first successful list
        self.relists = 0  # lists after the first (tests, metrics)

    async def run(self) -> None:
        backoff = 0.2
        first = True
        while True:
            try:
                items, rv = await self.source.list_triggers(self.namespace)
            except KubeApiError as exc:
                log.error("listing triggers failed; retrying", extra={"namespace": self.namespace or "*",
                                                                      "error": str(exc), "retry_in": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if not first:
                self.relists += 1
            first = False
            self.reconciler.resync(items, self.namespace)
            self.synced.set()
            try:
                await self._watch(rv)
                backoff = 0.2
            except WatchGone:
                log.info("watch expired (410 Gone): relisting", extra={"namespace": self.namespace or "*"})
            except KubeApiError as exc:
                log.warning("watch dropped: relisting", extra={"namespace": self.namespace or "*",
                                                               "error": str(exc), "retry_in": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _watch(self, rv: str) -> None:
        """Watch from `rv`, resuming after clean server-side ends; return never (raises to relist)."""
        while True:
            async for event in self.source.watch_triggers(self.namespace, rv, self.watch_timeout):
                rv = self._handle(event) or rv

    def _handle(self, event: WatchEvent) -> str | None:
        obj = event.object
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        if event.type in ("ADDED", "MODIFIED"):
            self.reconciler.apply(obj)
        elif event.type == "DELETED":
            self.reconciler.delete(trigger_key(obj))
        return str(rv) if rv else None
