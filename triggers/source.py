"""The source adapter protocol: what one broker must offer the driver (`triggers.driver.SourceDriver`).

An adapter knows how to fetch, decode, ack, nak, pause and resume its broker's messages; the driver owns
everything else (submit, settle on every path, drain within grace, restart with backoff, readiness).
`M` is the adapter's own message type (an aiokafka `ConsumerRecord`, a nats-py `Msg`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from schemas.cloudevent import CloudEvent

M = TypeVar("M")


class SourceUnreachable(ConnectionError):
    """The broker cannot be reached (at start or while running); the driver retries with backoff.

    The message names the broker (`cannot reach Kafka at host:9092: ...`)."""


@dataclass(frozen=True, slots=True)
class RawInput:
    """What the dead-letter sink needs of input that did not decode: its id, origin and bytes."""

    id: str
    source: str
    data: bytes | None
    content_type: str | None
    key: bytes | None = None


Revoke = Callable[[Iterable[Hashable]], Awaitable[None]]
"""Given to `Source.open`: the adapter awaits it with the groups it is about to give up (a Kafka
revocation); when it returns, no item of those groups runs any more."""


class Source(Protocol[M]):
    """One broker, adapted. All methods but `open`, `fetch`, `ack`, `nak`, `probe` and `close` are cheap
    and synchronous: they run on the hot path."""

    broker: str
    """For log lines: `Kafka at host:9092`, `NATS at nats://...`."""
    redelivers: bool
    """True when a retry is a redelivery by the broker (`nak(delay)`, JetStream) rather than in-process."""
    pauses_groups: bool
    """True when `pause(group)` stops that group's fetching at the broker (Kafka partitions)."""
    lag: int

    async def open(self, revoke: Revoke) -> None:
        """Connect and subscribe; raises `SourceUnreachable` when the broker cannot be reached."""

    async def fetch(self, limit: int) -> Sequence[M]:
        """Up to `limit` messages; waits at most about a second, returns [] when idle."""

    def current(self) -> bool:
        """False when the batch `fetch` returned last went stale (a revocation since): it is dropped."""

    def group(self, msg: M) -> Hashable:
        """The unit of flow control and revocation (a partition, a subject)."""

    def lane(self, msg: M, event: CloudEvent | None) -> Hashable | None:
        """The ordering lane (None = no ordering)."""

    def decode(self, msg: M) -> CloudEvent:
        """The message as a CloudEvent; raises `SchemaError` for undecodable input."""

    def raw(self, msg: M) -> RawInput:
        """The message as raw input, for dead-lettering what did not decode."""

    def key(self, msg: M) -> bytes | None:
        """The key a dead letter keeps (the Kafka record key)."""

    def attempt(self, msg: M) -> int:
        """Which delivery this is (1 = first); always 1 for sources that do not redeliver."""

    async def ack(self, msg: M) -> None:
        """The message's fate is settled: ack it, or mark its offset committable. An adapter whose ack is no
        I/O may also offer `ack_now(msg)`, a plain function the driver then calls instead."""

    async def nak(self, msg: M, delay: float) -> None:
        """Ask for a redelivery after `delay` seconds (only called when `redelivers`)."""

    def pause(self, group: Hashable) -> None:
        """Stop fetching `group` (its queue is full); a no-op where the broker cannot."""

    def resume(self, group: Hashable) -> None: ...

    async def housekeeping(self) -> None:
        """Runs beside fetching until cancelled: periodic commits, lag, in-progress signals."""

    async def probe(self) -> None:
        """Raises `SourceUnreachable` when the broker cannot be reached right now."""

    async def stop_intake(self) -> Sequence[M]:
        """Stop receiving (stop begins); returns messages received but never fetched (core NATS)."""

    async def close(self) -> None:
        """Final commit / release of unsettled messages, then disconnect. Never raises."""
