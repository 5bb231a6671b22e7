"""The syntax of the names events are published to: Kafka topics and NATS subjects.

Checked before any network call, so a typo is refused at once as an invalid name instead of surfacing
as a broker timeout. Reserved names (`$JS.`, `__consumer_offsets`, ...) are a separate check.
"""

from __future__ import annotations

import re

from schemas.errors import SchemaError

KAFKA_TOPIC_MAX = 249
_KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]+")
_NATS_TOKEN = re.compile(r"[^\s.*>]+")


class InvalidName(SchemaError):
    """A topic or subject that the broker would refuse; `name` is the name, the message says why."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"invalid name {name!r}: {why}")
        self.name = name
        self.why = why


def validate_topic(name: str) -> None:
    """A Kafka topic name: 1-249 of A-Z a-z 0-9 . _ -, and not `.` or `..` (Kafka's own rules)."""
    if not name:
        raise InvalidName(name, "a topic name must not be empty")
    if len(name) > KAFKA_TOPIC_MAX:
        raise InvalidName(name, f"a topic name has at most {KAFKA_TOPIC_MAX} characters, this one {len(name)}")
    if not _KAFKA_TOPIC.fullmatch(name):
        bad = next(c for c in name if not _KAFKA_TOPIC.fullmatch(c))
        raise InvalidName(name, f"{bad!r} is not allowed in a topic name")
    if name in (".", ".."):
        raise InvalidName(name, "a topic name cannot be '.' or '..'")


def validate_subject(name: str) -> None:
    """A NATS subject to publish to: non-empty dot-separated tokens, no wildcards (`*`, `>`), no whitespace."""
    if not name:
        raise InvalidName(name, "a subject must not be empty")
    for token in name.split("."):
        if not token:
            raise InvalidName(name, "a subject is dot-separated tokens, none of them empty")
        if not _NATS_TOKEN.fullmatch(token):
            what = "whitespace" if any(c.isspace() for c in token) else "a wildcard (* or >)"
            raise InvalidName(name, f"{what} is not allowed in a subject to publish to")
