"""The `eventbus` command: run triggers, validate specs, publish events."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from eventbus.failures import CliFailure

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
    from eventbus.logs import setup_logging
    from eventbus.preflight import require_brokers, require_secrets
    from eventbus.security_flags import security_settings
    from eventbus.specs import default_up_path, load_some
    from eventbus.up import UpOptions, run_up

    setup_logging(args.log_format, args.log_level)
    if args.gateway and args.functions:
        raise CliFailure("--gateway and --functions", "both given", "use one of them", code=2)
    path, functions = args.file, args.functions
    if path is None:
        path, example_functions = default_up_path()
        if functions is None and args.gateway is None:
            functions = example_functions
    triggers = load_some(path)
    require_secrets(triggers)
    require_brokers(triggers, kafka=args.kafka, nats=args.nats or "embedded")
    security = security_settings(args)
    opts = UpOptions(path=path, http_port=args.http_port, gateway=args.gateway, functions=functions,
                     nats=args.nats, kafka=args.kafka, data_dir=Path(args.data_dir), grace=args.grace,
                     security=security)
    from eventbus.loop import run as run_loop

    run_loop(run_up(opts, triggers))  # on uvloop when installed (see eventbus.loop)
    return 0


def _add_logging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


class _Parser(argparse.ArgumentParser):
    """Usage errors as one sentence (`eventbus publish: invalid arguments: ... (see eventbus publish --help)`),
    exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: invalid arguments: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from eventbus.security_flags import add_security_flags

    parser = _Parser(prog="eventbus", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the triggers defined in a file or folder")
    run.add_argument("-f", "--file", help="Trigger YAML file or folder (required unless --kubernetes)")
    run.add_argument("--kubernetes", action="store_true", help="run the Trigger resources of a Kubernetes cluster")
    run.add_argument("--namespace", action="append", default=[],
                     help="with --kubernetes: watch this namespace (repeatable; default all namespaces)")
    run.add_argument("--kubeconfig", help="with --kubernetes: kubeconfig file (else $KUBECONFIG, else in-cluster)")
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
    run.add_argument("--keda-port", type=int, default=None, help="serve KEDA's external scaler (gRPC) on this port")

    up = sub.add_parser("up", help="local mode: embedded NATS, the HTTP ingress, triggers and dev functions")
    up.add_argument("-f", "--file", default=None,
                    help="Trigger YAML file or folder (default ./triggers if it holds YAML, else the quick start's "
                         "examples/quickstart/triggers with its functions)")
    up.add_argument("--http-port", type=int, default=8080, help="HTTP ingress port (default 8080)")
    up.add_argument("--gateway", help="gateway base URL (instead of --functions)")
    up.add_argument("--functions", help="Python file whose `async def name(event)` functions serve as the gateway")
    up.add_argument("--nats", help="use this NATS server instead of the embedded one")
    up.add_argument("--kafka", help="use this Kafka cluster instead of the embedded NATS server")
    up.add_argument("--data-dir", default=".eventbus", help="embedded server data (default ./.eventbus)")
    up.add_argument("--grace", type=_duration, default=10.0, help="drain time on Ctrl-C (default 10s)")
    _add_logging(up)
    _add_logging(run)
    add_security_flags(run, default_host="0.0.0.0")
    add_security_flags(up, default_host="127.0.0.1")

    cron = sub.add_parser("cron", help="cron trigger tools")
    cron_sub = cron.add_subparsers(dest="cron_command", required=True)
    cron_next = cron_sub.add_parser("next", help="print the next firing times of each cron trigger")
    cron_next.add_argument("-f", "--file", required=True, help="Trigger YAML file or folder")
    cron_next.add_argument("--count", type=int, default=5, help="how many firing times (default 5)")

    sub.add_parser("crds", help="print the Trigger CustomResourceDefinition (YAML)")

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
    pub.add_argument("--key", help="the Kafka record key; the partitionkey extension over --nats and --http")
    pub.add_argument("--core", action="store_true",
                     help="with --nats: core NATS publish, fire-and-forget (nothing stored, no ack)")
    pub.add_argument("--subject", help="with --nats: the NATS subject; otherwise the event's subject attribute")
    pub.add_argument("--data", help="JSON text, or @file for a file's bytes")
    pub.add_argument("--content-type", help="datacontenttype (default application/json for --data)")
    pub.add_argument("--mode", choices=["binary", "structured"], default="binary")
    pub.add_argument("--token", help="with --http: the publisher's bearer token (else EVENTBUS_TOKEN)")
    _add_logging(pub)

    lag = sub.add_parser("lag", help="print each trigger's lag and scaling hint, read from the brokers")
    lag.add_argument("-f", "--file", required=True, help="Trigger YAML file or folder")
    lag.add_argument("-o", "--output", choices=["table", "json"], default="table")
    lag.add_argument("--watch", type=_duration, default=None, help="re-read every interval (e.g. 2s)")
    lag.add_argument("--kafka", help="default Kafka bootstrap servers (else EVENTBUS_KAFKA_BOOTSTRAP)")
    lag.add_argument("--nats", help="default NATS servers (else EVENTBUS_NATS_URL)")

    for p in (run, up, cron_next, val, pub, lag):  # `--debug` after the command works too
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _validate(path: str) -> int:
    from eventbus.specs import load_some, sink_problems

    triggers = load_some(path)
    problems = sink_problems(triggers)
    if problems:
        raise CliFailure("cannot load triggers", f"{len(problems)} sink(s) reach no cluster",
                         "give the sink bootstrapServers/servers, or run with --kafka/--nats",
                         details=tuple(problems))
    for t in triggers:
        print(f"ok  {t.key}  source={t.spec.source.kind}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from connectors.gateway import DEFAULT_URL_TEMPLATE
    from eventbus.logs import setup_logging
    from eventbus.preflight import require_brokers, require_secrets
    from eventbus.runtime import Runtime, RuntimeConfig
    from eventbus.security_flags import security_settings
    from eventbus.specs import load_some

    setup_logging(args.log_format, args.log_level)
    security = security_settings(args)
    config = RuntimeConfig(
        gateway=args.gateway,
        url_template=args.url_template or DEFAULT_URL_TEMPLATE,
        kafka=args.kafka,
        nats=args.nats,
        metrics_port=args.metrics_port,
        grace=args.grace,
        http_port=args.http_port,
        max_body=args.max_body,
        keda_port=args.keda_port,
        **security,
    )
    if args.kubernetes:
        from eventbus.kube_controller import run_kubernetes

        return run_kubernetes(args, config)
    if not args.file:
        raise CliFailure("-f/--file", "no Trigger file given", "pass -f FILE, or --kubernetes", code=2)
    triggers = load_some(args.file)
    from triggers.secret_refs import kubernetes_only

    if problems := kubernetes_only(triggers):
        raise CliFailure("cannot load triggers", f"{len(problems)} secretKeyRef(s) outside Kubernetes",
                         "use {env: VAR} with -f, or run --kubernetes", details=tuple(problems))
    require_secrets(triggers)
    require_brokers(triggers, kafka=args.kafka, nats=args.nats)

    async def main() -> None:
        runtime = Runtime(config)
        try:
            await runtime.run_until_signal(triggers)
        except BaseException:
            await runtime.stop()  # a failed start: close what it opened (sessions, clients) before exiting
            raise

    from eventbus.loop import run as run_loop

    run_loop(main())  # on uvloop when installed (see eventbus.loop)
    return 0


def _publish(args: argparse.Namespace) -> int:
    from eventbus.logs import setup_logging
    from eventbus.producer import build_event, check_target, publish_event

    setup_logging(args.log_format, args.log_level)
    if args.nats is not None and not args.subject:
        raise CliFailure("--nats", "needs --subject (the NATS subject)", "add --subject S", code=2)
    if args.nats is None and not args.topic:
        raise CliFailure("--topic", "required", "add --topic T, or use --nats URL --subject S", code=2)
    if args.core and args.nats is None:
        raise CliFailure("--core", "applies to --nats only", "drop --core, or publish with --nats", code=2)
    if sum(x is not None for x in (args.kafka, args.nats, args.http)) > 1:
        raise CliFailure("--kafka, --nats, --http", "more than one given", "publish to one of them", code=2)
    subject = args.subject if args.nats is not None else None
    check_target(topic=args.topic, nats=args.nats, subject=subject)  # names before files or the network
    data: Any = None
    if args.data is not None:
        if args.data.startswith("@"):
            try:
                data = Path(args.data[1:]).read_bytes()
            except OSError as exc:
                raise CliFailure(f"--data {args.data}", exc.strerror or str(exc),
                                 "@FILE reads that file's bytes; check the path") from exc
        else:
            try:
                data = json.loads(args.data)
            except json.JSONDecodeError as exc:
                raise CliFailure("--data", f"not valid JSON ({exc})", "quote it as JSON, or use @file for raw bytes",
                                 code=2) from exc
    attr_subject = args.ce_subject if args.nats is not None else (args.ce_subject or args.subject)
    event = build_event(type=args.type, source=args.source, data=data, id=args.id, subject=attr_subject,
                        datacontenttype=args.content_type)
    receipt = asyncio.run(publish_event(event, kafka=args.kafka, topic=args.topic, key=args.key, mode=args.mode,
                                        nats=args.nats, subject=subject, http=args.http, core=args.core,
                                        token=args.token or os.environ.get("EVENTBUS_TOKEN") or None))
    where = {"subject": args.subject} if args.nats is not None else {"topic": args.topic}
    out: dict[str, Any] = {"published": event.id, **where, "stored": receipt.stored}
    if receipt.stream is not None:
        out.update(stream=receipt.stream, seq=receipt.seq)
    print(json.dumps(out))
    if not receipt.stored:
        print("eventbus publish: sent with --core: fire-and-forget, not stored; subscribers not connected now "
              "will never see it", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: the first question about a stuck runtime.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    args = build_parser().parse_args(argv)
    if args.command in ("run", "up"):
        from eventbus.shutdown import exit_on_early_signal

        exit_on_early_signal()  # a SIGTERM before the runtime handles signals: exit 0, nothing to drain
    command = args.command + (" " + args.cron_command if args.command == "cron" else "")
    try:
        code = _dispatch(args)
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:
        code = _fail(command, exc, debug=args.debug)
    if args.command in ("run", "up"):
        from eventbus.shutdown import exit_process

        exit_process(code)  # Python's own exit clean-up took seconds under load: the grace bound covers all
    return code


def _fail(command: str, exc: Exception, *, debug: bool) -> int:
    """Print the one-line sentence for `exc` (after the traceback with --debug); the exit code."""
    from eventbus.failures import describe

    if debug:
        traceback.print_exc()
    failure = describe(exc)
    for line in failure.details:
        print(line, file=sys.stderr)
    print(failure.line(command), file=sys.stderr, flush=True)
    return failure.code


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "cron":
        from eventbus.cron import cron_next
        from eventbus.specs import load_some

        if args.count > 0:  # (cron_next refuses a bad count first)
            load_some(args.file)  # a missing or empty path fails here as one sentence

        return cron_next(args.file, args.count)
    if args.command == "crds":
        from schemas.crd import render_crd

        print(render_crd(), end="")
        return 0
    if args.command == "validate":
        return _validate(args.file)
    if args.command in ("run", "up"):
        return _run(args) if args.command == "run" else _up(args)
    if args.command == "publish":
        return _publish(args)
    if args.command == "lag":
        from eventbus.lag_cli import lag_command

        return lag_command(args.file, args.output, args.watch, args.kafka, args.nats)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
