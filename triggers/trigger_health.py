"""Is a running trigger healthy? Read from its counters over a window: what the `Degraded` condition says.

`DeadLetterFailing`: writes to the dead-letter sink failed in the window (the trigger stalls until the
sink takes them). `FunctionFailing`: events were retried, dead-lettered or dropped in the window and none
was delivered. Otherwise healthy. Counters are this replica's (each replica runs every trigger). One pass
over the registry per window serves every trigger (a lookup per trigger would walk the registry each time).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

_FIELDS = {"eventbus_events_delivered_total": 0, "eventbus_events_retried_total": 1,
           "eventbus_events_dead_lettered_total": 2, "eventbus_events_dropped_total": 3}
_SINK_ERRORS = "eventbus_sink_errors_total"


@dataclass(frozen=True, slots=True)
class Health:
    reason: str  # DeadLetterFailing, FunctionFailing
    message: str


class HealthMonitor:
    """Compares each trigger's counters with their values one `window` earlier."""

    def __init__(self, registry: CollectorRegistry, window: float = 5.0) -> None:
        self.registry = registry
        self.window = window
        self._at = 0.0
        self._base: dict[str, list[float]] = {}
        self._health: dict[str, Health] = {}

    def _sample(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(lambda: [0.0] * 5)
        for family in self.registry.collect():
            for s in family.samples:
                trigger = s.labels.get("trigger")
                if trigger is None:
                    continue
                if s.name in _FIELDS:
                    out[trigger][_FIELDS[s.name]] += s.value
                elif s.name == _SINK_ERRORS and s.labels.get("sink") == "dead-letter":
                    out[trigger][4] += s.value
        return out

    def check(self, key: str) -> Health | None:
        """The trigger's health over the last window (the registry is read once per window)."""
        now = time.monotonic()
        if now - self._at >= self.window:
            self._evaluate(now)
        return self._health.get(key)

    def _evaluate(self, now: float) -> None:
        current = self._sample()
        health: dict[str, Health] = {}
        if self._at:
            for key, values in current.items():
                base = self._base.get(key, [0.0] * 5)
                delivered, retried, dead, dropped, sink_errors = (c - b for c, b in zip(values, base, strict=True))
                if sink_errors > 0:
                    health[key] = Health("DeadLetterFailing", f"{sink_errors:.0f} dead-letter writes failed in the "
                                         f"last {self.window:.0f}s; the trigger waits for the sink")
                elif delivered == 0 and (retried + dead + dropped) > 0:
                    health[key] = Health("FunctionFailing", f"no event delivered in the last {self.window:.0f}s: "
                                         f"{retried:.0f} retried, {dead:.0f} dead-lettered, {dropped:.0f} dropped")
        self._base, self._health, self._at = dict(current), health, now
