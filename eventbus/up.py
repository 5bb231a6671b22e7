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
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connectors.embedded_nats import DEFAULT_STREAM, EmbeddedNats, cover_subject
from eventbus.dev_gateway import DevGateway, check_function_names, load_functions
from eventbus.ingress import DEFAULT_HTTP_PORT, set_no_stream_hook
from eventbus.runtime import Runtime, RuntimeConfig
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


async def run_up(opts: UpOptions, triggers: list[Trigger]) -> None:
    """Start everything, run until SIGINT/SIGTERM, stop in reverse order."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    embedded: EmbeddedNats | None = None
    dev: DevGateway | None = None
    runtime: Runtime | None = None
    functions = load_functions(opts.functions) if opts.functions is not None else None
    if functions is not None and opts.functions is not None:
        check_function_names(triggers, functions, opts.functions)  # before anything starts
    try:
        nats_url = opts.nats
        if opts.nats is None and opts.kafka is None:
            embedded = EmbeddedNats(opts.data_dir)
            await embedded.start()
            nats_url = embedded.url
        gateway = opts.gateway
        if functions is not None:
            dev = DevGateway(functions)
            await dev.start()
            gateway = dev.url
        elif gateway is None:
            log.warning("no --gateway and no --functions: only triggers with function.url can deliver")
        runtime = Runtime(RuntimeConfig(gateway=gateway, nats=nats_url, kafka=opts.kafka, http_port=opts.http_port,
                                        grace=opts.grace, **opts.security))
        if embedded is not None:
            js = (await runtime.nats_client()).jetstream()
            for stream, subject in embedded_subjects(triggers):
                await cover_subject(js, subject, stream)

            async def cover(subject: str) -> bool:
                return await cover_subject(js, subject)

            set_no_stream_hook(runtime, cover)
        await runtime.start(triggers)
        port = runtime.ingress.port if runtime.ingress is not None else opts.http_port
        bus = (f"embedded NATS {nats_url} (JetStream in {opts.data_dir}/)" if embedded
               else (nats_url or opts.kafka or ""))
        print(banner(triggers, port, bus), flush=True)
        await stop.wait()
        log.info("stopping: draining in-flight events", extra={"grace_s": opts.grace})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if runtime is not None:
            await runtime.stop()
        if dev is not None:
            await dev.stop()
        if embedded is not None:
            await embedded.stop()
        log.info("eventbus up stopped")
