"""The `eventbus` command: run triggers, validate specs, publish events."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("eventbus.cli")


def _duration(text: str) -> float:
    from schemas.duration import parse_duration  # here: pydantic takes ~0.2 s to import, signals wait for it

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    """`1048576`, `512KiB`, `1MiB`: the ingress body limit, at least 64 KiB (CloudEvents must pass 64 KiB)."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "kb": 1000, "mb": 1000**2, "k": 1 << 10, "m": 1 << 20, "b": 1}
    t = text.strip().lower()
    for suffix, mult in units.items():
        if t.endswith(suffix) and t[: -len(suffix)].strip().isdigit():
            n = int(t[: -len(suffix)]) * mult
            break
    else:
        if not t.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r}: use bytes or a size like 512KiB, 1MiB")
        n = int(t)
    if n < 64 * 1024:
        raise argparse.ArgumentTypeError(f"{text!r}: must be at least 64KiB (CloudEvents of 64 KiB must pass)")
    return n


def _up(args: argparse.Namespace) -> int:
    from eventbus.dev_gateway import FunctionsError
    from eventbus.logs import setup_logging
    from eventbus.specs import load_or_report
    from eventbus.up import UpOptions, run_up

    setup_logging(args.log_format, args.log_level)
    if args.gateway and args.functions:
        print("use --gateway or --functions, not both", file=sys.stderr)
        return 2
    triggers = load_or_report(args.file)
    if triggers is None:
        return 1
    opts = UpOptions(path=args.file, http_port=args.http_port, gateway=args.gateway, functions=args.functions,
                     nats=args.nats, kafka=args.kafka, data_dir=Path(args.data_dir), grace=args.grace)
    try:
        asyncio.run(run_up(opts, triggers))
    except FunctionsError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except Exception as exc:
        log.error(f"eventbus up failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the triggers defined in a file or folder")
    run.add_argument("-f", "--file", required=True, help="Trigger YAML file or folder")
    run.add_argument("--gateway", help="gateway base URL; functions are {gateway}/{namespace}/{name}")
    run.add_argument("--url-template", default=None,
                     help="function URL template (default {gateway}/{namespace}/{name})")
    run.add_argument("--kafka", help="default Kafka bootstrap servers (else EVENTBUS_KAFKA_BOOTSTRAP)")
    run.add_argument("--nats", help="default NATS servers for triggers and sinks naming none (else EVENTBUS_NATS_URL)")
    run.add_argument("--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz here")
    run.add_argument("--grace", type=_duration, default=30.0, help="drain time on SIGTERM (default 30s)")
    run.add_argument("--http-port", type=int, default=None,
                     help="HTTP ingress port (webhooks, POST /topics/<name>); default 8080 once an HTTP trigger runs")
    run.add_argument("--max-body", type=_size, default=1 << 20, help="ingress body limit (default 1MiB, min 64KiB)")

    up = sub.add_parser("up", help="local mode: embedded NATS, the HTTP ingress, triggers and dev functions")
    up.add_argument("-f", "--file", default="triggers", help="Trigger YAML file or folder (default ./triggers)")
    up.add_argument("--http-port", type=int, default=8080, help="HTTP ingress port (default 8080)")
    up.add_argument("--gateway", help="gateway base URL (instead of --functions)")
    up.add_argument("--functions", help="Python file whose `async def name(event)` functions serve as the gateway")
    up.add_argument("--nats", help="use this NATS server instead of the embedded one")
    up.add_argument("--kafka", help="use this Kafka cluster instead of the embedded NATS server")
    up.add_argument("--data-dir", default=".eventbus", help="embedded server data (default ./.eventbus)")
    up.add_argument("--grace", type=_duration, default=10.0, help="drain time on Ctrl-C (default 10s)")
    _add_logging(up)
    _add_logging(run)

    cron = sub.add_parser("cron", help="cron trigger tools")
    cron_sub = cron.add_subparsers(dest="cron_command", required=True)
    cron_next = cron_sub.add_parser("next", help="print the next firing times of each cron trigger")
    cron_next.add_argument("-f", "--file", required=True, help="Trigger YAML file or folder")
    cron_next.add_argument("--count", type=int, default=5, help="how many firing times (default 5)")

    val = sub.add_parser("validate", help="check Trigger YAML and print every problem")
    val.add_argument("-f", "--file", required=True)

    pub = sub.add_parser("publish", help="publish one CloudEvent")
    pub.add_argument("--kafka", help="bootstrap servers (else EVENTBUS_KAFKA_BOOTSTRAP)")
    pub.add_argument("--nats", help="NATS servers: publish to --subject (JetStream with ack if a stream covers it)")
    pub.add_argument("--http", help="eventbus ingress URL: POST to <URL>/topics/<--topic>")
    pub.add_argument("--topic", help="Kafka topic, or the ingress topic with --http")
    pub.add_argument("--ce-subject", help="the event's subject attribute (with --nats, --subject is the NATS subject)")
    pub.add_argument("--type", required=True)
    pub.add_argument("--source", required=True)
    pub.add_argument("--id")
    pub.add_argument("--key")
    pub.add_argument("--subject", help="with --nats: the NATS subject; otherwise the event's subject attribute")
    pub.add_argument("--data", help="JSON text, or @file for a file's bytes")
    pub.add_argument("--content-type", help="datacontenttype (default application/json for --data)")
    pub.add_argument("--mode", choices=["binary", "structured"], default="binary")
    _add_logging(pub)
    return parser


def _validate(path: str) -> int:
    from eventbus.specs import load_or_report, sink_problems

    triggers = load_or_report(path)
    if triggers is None:
        return 1
    problems = sink_problems(triggers)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    for t in triggers:
        print(f"ok  {t.key}  source={t.spec.source.kind}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from connectors.gateway import DEFAULT_URL_TEMPLATE
    from eventbus.logs import setup_logging
    from eventbus.runtime import Runtime, RuntimeConfig
    from eventbus.specs import load_or_report

    setup_logging(args.log_format, args.log_level)
    triggers = load_or_report(args.file)
    if triggers is None:
        return 1
    config = RuntimeConfig(
        gateway=args.gateway,
        url_template=args.url_template or DEFAULT_URL_TEMPLATE,
        kafka=args.kafka,
        nats=args.nats,
        metrics_port=args.metrics_port,
        grace=args.grace,
        http_port=args.http_port,
        max_body=args.max_body,
    )

    async def main() -> None:
        await Runtime(config).run_until_signal(triggers)

    try:
        asyncio.run(main())
    except Exception as exc:
        log.error(f"eventbus run failed: {type(exc).__name__}: {exc}")
        return 1
    return 0


def _publish(args: argparse.Namespace) -> int:
    from eventbus.logs import setup_logging
    from eventbus.producer import PublishError, publish

    setup_logging(args.log_format, args.log_level)
    data: Any = None
    if args.data is not None:
        if args.data.startswith("@"):
            data = Path(args.data[1:]).read_bytes()
        else:
            try:
                data = json.loads(args.data)
            except json.JSONDecodeError as exc:
                print(f"--data: not valid JSON ({exc}); use @file for raw bytes", file=sys.stderr)
                return 2
    if args.nats is not None and not args.subject:
        print("--nats needs --subject (the NATS subject)", file=sys.stderr)
        return 2
    if args.nats is None and not args.topic:
        print("--topic is required (or --nats URL --subject S)", file=sys.stderr)
        return 2
    try:
        event = asyncio.run(publish(
            kafka=args.kafka, topic=args.topic, type=args.type, source=args.source, id=args.id, key=args.key,
            subject=args.subject, data=data, datacontenttype=args.content_type, mode=args.mode,
            nats=args.nats, http=args.http, ce_subject=args.ce_subject,
        ))
    except PublishError as exc:
        print(f"publish failed: {exc}", file=sys.stderr)
        return 1
    where = {"subject": args.subject} if args.nats is not None else {"topic": args.topic}
    print(json.dumps({"published": event.id, **where}))
    return 0


def main(argv: list[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: the first question about a stuck runtime.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    args = build_parser().parse_args(argv)
    if args.command in ("run", "up"):
        from eventbus.shutdown import exit_on_early_signal

        exit_on_early_signal()  # a SIGTERM before the runtime handles signals: exit 0, nothing to drain
    if args.command == "cron":
        from eventbus.cron import cron_next

        return cron_next(args.file, args.count)
    if args.command == "validate":
        return _validate(args.file)
    if args.command in ("run", "up"):
        from eventbus.shutdown import exit_process

        exit_process(_run(args) if args.command == "run" else _up(args))
    if args.command == "publish":
        return _publish(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
