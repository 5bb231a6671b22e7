"""Reserved subjects and topics: names no publish path may write to (ingress, CLI, Python API, sinks).

Why: a NATS subject under `$JS.` is the JetStream API (`$JS.API.STREAM.PURGE.<stream>` empties a stream),
`$KV.`/`$O.` are key-value and object stores (the cron scheduler's lease lives in `$KV.eventbus_cron`),
`$SYS.` is the server's own, `_INBOX.` carries request replies, and `http.<namespace>.<name>` is where an
async HTTP trigger parks events after their webhook auth passed (a forged write there skips the check).
Kafka keeps its own state in topics named `__...` (`__consumer_offsets`, `__transaction_state`).
Pure logic, no I/O: callers turn `ReservedName` into a 403, a CLI error or a validation error.
"""

from __future__ import annotations

from collections.abc import Iterable

RESERVED_SUBJECTS: tuple[tuple[str, str], ...] = (
    ("$JS.>", "the JetStream API"),
    ("$KV.>", "JetStream key-value stores"),
    ("$O.>", "JetStream object stores"),
    ("$SYS.>", "the NATS system account"),
    ("_INBOX.>", "request/reply inboxes"),
)
"""NATS patterns reserved by the server, with what lives there (the reason given when refusing)."""

HTTP_INTERNAL_PATTERN = "http.*.>"
"""`http.<namespace>.<name>`: the subject or topic an async HTTP trigger parks its events on by default."""


class ReservedName(ValueError):
    """A subject or topic that belongs to the broker or to eventbus itself; `name` is the refused name."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name!r} is reserved ({reason}): publishing there is refused")
        self.name = name
        self.reason = reason


def pattern_matches(pattern: str, name: str) -> bool:
    """NATS wildcard matching over dot-separated tokens: `*` is one token, `>` one or more trailing tokens.
    Used for Kafka topic names too (a name without dots is one token)."""
    p, s = pattern.split("."), name.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


def reserved_reason(name: str, *, bus: str | None = None, internal: bool = True) -> str | None:
    """Why `name` may not be published to, or None. `bus` is "kafka", "nats" or None (either: the
    ingress and the HTTP publish path do not know which bus is behind). With `internal=False` the
    async HTTP triggers' own subjects are allowed (the trigger's own `topic` setting names one)."""
    if bus != "kafka":
        for pattern, what in RESERVED_SUBJECTS:
            if pattern_matches(pattern, name):
                return f"{pattern} is {what}"
        if name.startswith("$"):
            return "subjects starting with $ belong to the NATS server"
    if bus != "nats" and name.startswith("__"):
        return "Kafka topics starting with __ hold the broker's own state"
    if internal and pattern_matches(HTTP_INTERNAL_PATTERN, name):
        return f"{HTTP_INTERNAL_PATTERN} is where async HTTP triggers park events that passed their webhook auth"
    return None


def check_publishable(name: str, *, bus: str | None = None, internal: bool = True,
                      also: Iterable[str] = ()) -> None:
    """Raise ReservedName unless `name` may be published to. `also`: further exact names to refuse
    (the topics running async HTTP triggers were configured with)."""
    reason = reserved_reason(name, bus=bus, internal=internal)
    if reason is None and name in set(also):
        reason = "an async HTTP trigger parks events there after their webhook auth passed"
    if reason is not None:
        raise ReservedName(name, reason)
