"""`eventbus lag -f PATH [-o table|json] [--watch 2s]`: every trigger's lag and scaling hint, read from the
brokers directly (no runtime needed), the same numbers the runtime serves to autoscalers.

HTTP and core NATS triggers only have in-flight events, which live inside runtimes: here they read 0
(an async HTTP trigger with a Kafka topic reads that topic's lag).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any, TextIO

from connectors.jetstream_lag import JetStreamLagReader
from connectors.kafka_lag import KafkaLagReader
from schemas.trigger import KafkaSource, NatsSource, Trigger
from triggers.hint_board import HintBoard
from triggers.lag_watchers import watcher_for
from triggers.scaling import Hint

COLUMNS = ("TRIGGER", "SOURCE", "LAG", "BACKLOG AGE", "DESIRED", "ACTIVE", "PARTITIONS")


class _CliEnv:
    """`WatchEnv` with this command's own connections; nothing is in flight in this process."""

    def __init__(self, kafka: str | None, nats: str | None) -> None:
        from eventbus.scaling_service import KafkaReaders

        self.kafka = KafkaReaders(kafka)
        self.nats_default = nats
        self._js: dict[tuple[str, ...], JetStreamLagReader] = {}
        self._conns: list[Any] = []

    async def kafka_reader(self, source: KafkaSource) -> KafkaLagReader:
        return await self.kafka.get(source)

    async def jetstream_reader(self, source: NatsSource) -> JetStreamLagReader:
        from connectors.nats_client import connect, connect_options, resolve_servers

        servers = resolve_servers(source.servers, self.nats_default)
        options = connect_options(source)
        key = (*servers, *sorted(f"{k}={v}" for k, v in options.items()))
        reader = self._js.get(key)
        if reader is None:
            nc = await connect(servers, name="eventbus-lag", **options)
            self._conns.append(nc)
            reader = self._js[key] = JetStreamLagReader(nc.jetstream(timeout=5))
        return reader

    def in_flight(self, trigger: Trigger) -> int:
        return 0

    async def close(self) -> None:
        await self.kafka.close()
        for nc in self._conns:
            try:
                await nc.close()
            except Exception:  # closing on the way out: nothing to do about it
                pass


def human_duration(seconds: float | None) -> str:
    """`-`, `850ms`, `42s`, `3m07s`, `2h05m`, `3d04h`: what an operator reads at a glance."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def render_table(hints: list[Hint], errors: dict[str, str]) -> str:
    rows = [COLUMNS]
    for h in hints:
        rows.append((h.trigger, h.source, str(h.lag), human_duration(h.backlog_age_seconds),
                     str(h.desired_replicas), "yes" if h.active else "no",
                     "-" if h.partitions is None else str(h.partitions)))
    for key, why in errors.items():
        rows.append((key, "?", "?", "?", "?", "?", f"error: {why}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))]
        lines.append("  ".join([*cells, r[-1]]).rstrip())
    return "\n".join(lines)


async def _lag(triggers: list[Trigger], output: str, watch: float | None, kafka: str | None, nats: str | None,
               out: TextIO) -> int:
    env = _CliEnv(kafka, nats)
    board = HintBoard()
    for t in triggers:
        board.add(watcher_for(t, env))
    try:
        while True:
            await board.refresh()
            hints = [h for k in board.keys() if k not in board.errors and (h := board.get(k)) is not None]
            errors = dict(board.errors)
            if output == "json":
                rows = [h.row() for h in hints]
                print(json.dumps(rows) if watch else json.dumps(rows, indent=2), file=out, flush=True)
            else:
                if watch:
                    print(time.strftime("%Y-%m-%d %H:%M:%S"), file=out)
                print(render_table(hints, errors), file=out, flush=True)
            if output == "json":
                for key, why in errors.items():
                    print(f"{key}: cannot read lag: {why}", file=sys.stderr)
            if watch is None:
                return 1 if errors else 0
            await asyncio.sleep(watch)
    finally:
        await env.close()


def lag_command(path: str, output: str, watch: float | None, kafka: str | None = None,
                nats: str | None = None) -> int:
    """The `eventbus lag` command: exit 1 when the specs do not load or a lag could not be read."""
    import logging

    from eventbus.specs import load_or_report

    for name in ("eventbus.nats", "eventbus.scaling"):  # this command prints its own errors
        logging.getLogger(name).setLevel(logging.ERROR)
    triggers = load_or_report(path)
    if triggers is None:
        return 1
    try:
        return asyncio.run(_lag(triggers, output, watch, kafka, nats, sys.stdout))
    except KeyboardInterrupt:
        return 0
