"""CLI failures as one sentence: `eventbus <command>: <what failed>: <why> (<what to do>)`.

Every typed error a command can meet is mapped here, in one place, so no user sees a traceback unless
they ask for one with `--debug`. Exit codes: 1 for runtime failures, 2 for usage.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


@dataclass
class CliFailure(Exception):
    """A failure already phrased for the user."""

    what: str
    why: str | None = None
    hint: str | None = None
    code: int = 1
    details: tuple[str, ...] = ()
    """Lines printed before the sentence (every problem of a set of Trigger files)."""

    def __str__(self) -> str:
        return self.line("")[len("eventbus : "):]

    def line(self, command: str) -> str:
        out = f"eventbus {command}: {self.what}"
        if self.why:
            out += f": {self.why}"
        if self.hint:
            out += f" ({self.hint})"
        return out


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out (no answer in time)"
    return text or type(exc).__name__


def describe(exc: BaseException) -> CliFailure:
    """The sentence for an error raised by a command (imports are local: each command loads what it needs)."""
    from connectors.embedded_nats import EmbeddedNatsError
    from connectors.http_auth import AuthConfigError
    from connectors.kafka import BOOTSTRAP_ENV, KafkaConfigError, KafkaWriteError
    from connectors.nats_client import NATS_URL_ENV, NatsConfigError, NatsUnreachable
    from connectors.nats_publish import NatsWriteError
    from eventbus.dev_gateway import FunctionsError, UnknownFunctions
    from eventbus.preflight import MissingSecrets, NoBroker
    from eventbus.producer import PublishError
    from eventbus.security_flags import SecurityConfigError
    from schemas.errors import TriggerSpecError
    from schemas.name_syntax import InvalidName
    from triggers.kafka_trigger import KafkaUnreachable

    if isinstance(exc, CliFailure):
        return exc
    if isinstance(exc, TriggerSpecError):
        if len(exc.problems) == 1:
            return CliFailure("cannot load triggers", str(exc.problems[0]),
                              "fix it; eventbus validate -f PATH checks")
        return CliFailure("cannot load triggers", f"{len(exc.problems)} problems in trigger specs (listed above)",
                          "fix them; eventbus validate -f PATH checks", details=tuple(map(str, exc.problems)))
    if isinstance(exc, PublishError):
        return CliFailure(exc.what, exc.why, exc.hint)
    if isinstance(exc, MissingSecrets):
        first = exc.missing[0]
        more = f" (and {len(exc.missing) - 1} more)" if len(exc.missing) > 1 else ""
        return CliFailure(f"trigger {first.trigger}", f"{first.field}: environment variable {first.env} is not "
                          f"set{more}", "set it in the environment before starting; no trigger was started")
    if isinstance(exc, NoBroker):
        why = f"no {exc.broker} servers (none in the trigger, no {exc.flag.split()[0]}, no {exc.env})"
        return CliFailure(f"trigger {exc.trigger}", why, f"pass {exc.flag} or set {exc.env}; no trigger was started")
    if isinstance(exc, UnknownFunctions):
        return CliFailure("--functions", _reason(exc), "define them there, or fix the triggers' function.name")
    if isinstance(exc, SecurityConfigError):
        return CliFailure("security settings", _reason(exc), "check --publishers and --allow-url")
    if isinstance(exc, InvalidName):
        return CliFailure(f"invalid name {exc.name!r}", exc.why)
    if isinstance(exc, KafkaConfigError):
        return CliFailure("Kafka settings", _reason(exc), None if "bootstrap" in str(exc) else
                          f"Kafka servers come from the trigger, --kafka or {BOOTSTRAP_ENV}")
    if isinstance(exc, NatsConfigError):
        return CliFailure("NATS settings", _reason(exc), None if "no NATS servers" in str(exc) else
                          f"NATS servers come from the trigger, --nats or {NATS_URL_ENV}")
    if isinstance(exc, AuthConfigError):
        return CliFailure("HTTP trigger auth", _reason(exc), "set the variable before starting")
    if isinstance(exc, NatsUnreachable | KafkaUnreachable | NatsWriteError | KafkaWriteError):
        return CliFailure("broker", _reason(exc), "is it running? check the address")
    if isinstance(exc, FunctionsError):
        return CliFailure("--functions", _reason(exc), "a Python file of `async def name(event)` functions")
    if isinstance(exc, EmbeddedNatsError):
        return CliFailure("embedded NATS server", _reason(exc), "or pass --nats URL to use a running server")
    if isinstance(exc, FileNotFoundError):
        return CliFailure(f"{exc.filename or 'file'}", "no such file", "check the path")
    if (isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE) or "address already in use" in str(exc):
        return CliFailure("cannot listen", _reason(exc),
                          "pass another --http-port or --metrics-port, or stop what uses that port")
    if isinstance(exc, OSError) and exc.filename:
        return CliFailure(str(exc.filename), exc.strerror or _reason(exc), "check the path and its permissions")
    if isinstance(exc, TimeoutError):
        return CliFailure("timed out", _reason(exc), "is the server there reachable? --debug shows where")
    return CliFailure(type(exc).__name__, _reason(exc), "run with --debug for the traceback")
