"""`eventbus up`: everything for local work in one process — an embedded NATS server with JetStream (unless a
broker is given), the HTTP ingress, the triggers under a folder, and optionally a dev gateway serving
Python handler functions.

Triggers that name no servers use the embedded bus. Every subject the triggers consume or write
(JetStream sources, async HTTP topics, NATS dead-letter/reply sinks) is made to land in a stream before
they start, and `POST /topics/<name>` extends the `EVENTBUS` stream on demand, so nothing published on the
embedded bus is silently dropped. Data lives in `.eventbus/` in the working directory: a restart resumes
undelivered events. Ctrl-C drains the triggers, then stops the dev gateway and the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.embedded_nats import DEFAULT_STREAM, EmbeddedNats, cover_subject
from eventbus.dev_gateway import DevGateway, check_function_names, load_functions
from eventbus.ingress import DEFAULT_HTTP_PORT, set_no_stream_hook
from eventbus.runtime import Runtime, RuntimeConfig
from eventbus.shutdown import serve_until_signal
from schemas.trigger import Trigger

log = logging.getLogger("eventbus.up")


@dataclass
class UpOptions:
    path: str = "triggers"
    http_port: int = DEFAULT_HTTP_PORT
    gateway: str | None = None
    functions: str | None = None
    nats: str | None = None
    kafka: str | None = None
    data_dir: Path = Path(".eventbus")
    grace: float = 10.0
    security: dict[str, Any] = field(default_factory=dict)  # RuntimeConfig fields from eventbus.security_flags


def embedded_subjects(triggers: list[Trigger]) -> list[tuple[str, str]]:
    """(stream, subject) pairs the embedded bus must store for these triggers (those naming no servers)."""
    out: list[tuple[str, str]] = []
    for t in triggers:
        src = t.spec.source
        if src.nats is not None and src.nats.jetstream is not None and not src.nats.servers:
            out.append((src.nats.jetstream.stream, src.nats.subject))
        if src.http is not None and src.http.topic is not None and src.http.topic.nats is not None \
                and not src.http.topic.nats.servers:
            out.append((DEFAULT_STREAM, src.http.topic.nats.subject))
        for sink in (t.spec.delivery.dead_letter, t.spec.delivery.reply):
            if sink is not None and sink.nats is not None and not sink.nats.servers:
                out.append((DEFAULT_STREAM, sink.nats.subject))
    return out


def example_topic(triggers: list[Trigger]) -> str:
    """A concrete subject a NATS trigger consumes (wildcards filled in), for the printed example."""
    for t in triggers:
        if t.spec.source.nats is not None:
            return ".".join("new" if tok in (">", "*") else tok for tok in t.spec.source.nats.subject.split("."))
    return "events"


def eventbus_command() -> str:
    """How to type `eventbus` in this shell: bare when it is on PATH, else its path (`.venv/bin/eventbus`)."""
    exe = Path(sys.executable).parent / "eventbus"
    if not exe.exists() or shutil.which("eventbus") == str(exe):
        return "eventbus"
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else str(exe)


def banner(triggers: list[Trigger], port: int, bus: str) -> str:
    base = f"http://localhost:{port}"
    lines = [f"eventbus is up: ingress {base}, bus {bus}, {len(triggers)} trigger(s)"]
    for t in triggers:
        src = t.spec.source
        lines.append(f"  {t.key:<32} {src.summary}")
    hooks = [t.spec.source.http for t in triggers if t.spec.source.http is not None]
    if hooks:
        lines.append("Send a webhook:")
        lines.append(f"  curl -i -X POST {base}{hooks[0].path} -H 'Content-Type: application/json' "
                     "-d '{\"hello\": \"world\"}'")
    topic = example_topic(triggers)
    lines.append("Publish to a topic:")
    lines.append(f"  {eventbus_command()} publish --http {base} --topic {shlex.quote(topic)} --type com.example.hello "
                 "--source /cli --data '{\"hello\": \"world\"}'")
    lines.append("Ctrl-C stops (undelivered events are kept in .eventbus/).")
    return "\n".join(lines)


class _Up:
    """What `eventbus up` runs, started in order and stopped in reverse (see `run_up`)."""

    def __init__(self, opts: UpOptions, triggers: list[Trigger]) -> None:
        self.opts = opts
        self.triggers = triggers
        self.embedded: EmbeddedNats | None = None
        self.dev: DevGateway | None = None
        self.runtime: Runtime | None = None
        self.functions = load_functions(opts.functions) if opts.functions is not None else None
        if self.functions is not None and opts.functions is not None:
            check_function_names(triggers, self.functions, opts.functions)  # before anything starts

    async def start(self) -> None:
        opts = self.opts
        nats_url = opts.nats
        if opts.nats is None and opts.kafka is None:
            self.embedded = EmbeddedNats(opts.data_dir)
            await self.embedded.start()
            nats_url = self.embedded.url
        gateway = opts.gateway
        if self.functions is not None:
            self.dev = DevGateway(self.functions)
            await self.dev.start()
            gateway = self.dev.url
        elif gateway is None:
            log.warning("no --gateway and no --functions: only triggers with function.url can deliver")
        runtime = self.runtime = Runtime(RuntimeConfig(gateway=gateway, nats=nats_url, kafka=opts.kafka,
                                                       http_port=opts.http_port, grace=opts.grace, **opts.security))
        if self.embedded is not None:
            js = (await runtime.nats_client()).jetstream()
            for stream, subject in embedded_subjects(self.triggers):
                await cover_subject(js, subject, stream)

            async def cover(subject: str) -> bool:
                return await cover_subject(js, subject)

            set_no_stream_hook(runtime, cover)
        await runtime.start(self.triggers)
        port = runtime.ingress.port if runtime.ingress is not None else opts.http_port
        bus = (f"embedded NATS {nats_url} (JetStream in {opts.data_dir}/)" if self.embedded
               else (nats_url or opts.kafka or ""))
        print(banner(self.triggers, port, bus), flush=True)

    async def watch(self) -> None:
        """Restart the embedded server if it dies; raise (a fatal error: exit 1) if it cannot be."""
        if self.embedded is not None:
            await self.embedded.supervise()
        else:
            await asyncio.Event().wait()

    def in_flight(self) -> int:
        return self.runtime.in_flight() if self.runtime is not None else 0

    def abandoned(self) -> int:
        return self.runtime.abandoned() if self.runtime is not None else 0

    async def stop(self) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        if self.dev is not None:
            await self.dev.stop()
        if self.embedded is not None:
            await self.embedded.stop(timeout=1.0)
        log.info("eventbus up stopped")


async def run_up(opts: UpOptions, triggers: list[Trigger]) -> None:
    """Start everything, run until SIGINT/SIGTERM (exit within --grace plus 2 s), stop in reverse order.
    The embedded NATS server is restarted if it dies; if it cannot be, `up` stops and raises."""
    up = _Up(opts, triggers)
    await serve_until_signal("eventbus up", up.start, up.stop, grace=opts.grace, in_flight=up.in_flight,
                             abandoned=up.abandoned, watch=up.watch)
