"""The `eventbus` command: run triggers, validate specs, publish events."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from schemas.duration import parse_duration

log = logging.getLogger("eventbus.cli")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eventbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the triggers defined in a file or folder")
    run.add_argument("-f", "--file", required=True, help="Trigger YAML file or folder")
    run.add_argument("--gateway", help="gateway base URL; functions are {gateway}/{namespace}/{name}")
    run.add_argument("--url-template", default=None, help="function URL template (default {gateway}/{namespace}/{name})")
    run.add_argument("--kafka", help="default Kafka bootstrap servers (else EVENTBUS_KAFKA_BOOTSTRAP)")
    run.add_argument("--metrics-port", type=int, default=None, help="serve /metrics, /healthz, /readyz here")
    run.add_argument("--grace", type=_duration, default=30.0, help="drain time on SIGTERM (default 30s)")
    _add_logging(run)

    val = sub.add_parser("validate", help="check Trigger YAML and print every problem")
    val.add_argument("-f", "--file", required=True)

    pub = sub.add_parser("publish", help="publish one CloudEvent")
    pub.add_argument("--kafka", help="bootstrap servers (else EVENTBUS_KAFKA_BOOTSTRAP)")
    pub.add_argument("--topic", required=True)
    pub.add_argument("--type", required=True)
    pub.add_argument("--source", required=True)
    pub.add_argument("--id")
    pub.add_argument("--key")
    pub.add_argument("--subject")
    pub.add_argument("--data", help="JSON text, or @file for a file's bytes")
    pub.add_argument("--content-type", help="datacontenttype (default application/json for --data)")
    pub.add_argument("--mode", choices=["binary", "structured"], default="binary")
    _add_logging(pub)
    return parser


def _validate(path: str) -> int:
    from schemas.errors import TriggerSpecError
    from schemas.loader import load_triggers

    try:
        triggers = load_triggers(path)
    except TriggerSpecError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for t in triggers:
        print(f"ok  {t.key}  source={t.spec.source.kind}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from connectors.gateway import DEFAULT_URL_TEMPLATE
    from eventbus.logs import setup_logging
    from eventbus.runtime import Runtime, RuntimeConfig
    from schemas.errors import TriggerSpecError
    from schemas.loader import load_triggers

    setup_logging(args.log_format, args.log_level)
    try:
        triggers = load_triggers(args.file)
    except TriggerSpecError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    config = RuntimeConfig(
        gateway=args.gateway,
        url_template=args.url_template or DEFAULT_URL_TEMPLATE,
        kafka=args.kafka,
        metrics_port=args.metrics_port,
        grace=args.grace,
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
    try:
        event = asyncio.run(publish(
            kafka=args.kafka, topic=args.topic, type=args.type, source=args.source, id=args.id, key=args.key,
            subject=args.subject, data=data, datacontenttype=args.content_type, mode=args.mode,
        ))
    except PublishError as exc:
        print(f"publish failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"published": event.id, "topic": args.topic}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.file)
    if args.command == "run":
        return _run(args)
    if args.command == "publish":
        return _publish(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
