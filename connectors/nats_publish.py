"""Writing CloudEvents to a NATS subject: JetStream with a PubAck when a stream covers the subject, else
core NATS publish + flush (the server has it, nobody promises to keep it).

`NatsSubjectWriter` is the shared writer (dead-letter and reply sinks, the producer API);
`publish_event_nats` is the one-shot producer call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client

from connectors.nats_client import resolve_servers
from schemas.cloudevent import CloudEvent
from schemas.nats_binding import to_nats_binary, to_nats_structured

log = logging.getLogger("eventbus.nats")

STREAM_LOOKUP_TTL = 10.0
"""How long a "which stream covers this subject" answer is trusted (a stream may be created later)."""

MSG_ID_HEADER = "Nats-Msg-Id"
_MAX_MSG_ID = 512


class NatsWriteError(RuntimeError):
    """A message could not be written (server unreachable, no PubAck in time, stream refused it).

    `permanent`: trying again will not help until someone acts (no stream any more, not authorised, the
    stream refuses the message); the caller still retries but says so loudly."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class NatsPayloadTooLarge(NatsWriteError):
    """Larger than the server's max payload (or the stream's max message size)."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, permanent=True)
        self.size = size


JS_MESSAGE_TOO_LARGE = 10054
"""JetStream's error code for "message size exceeds maximum allowed"."""


MsgId = Callable[[CloudEvent], str]


def dedupe_id(prefix: str) -> MsgId:
    """`Nats-Msg-Id` = `<prefix>:<source>:<id>`: a second write of the same event (crash before the
    source ack) inside the stream's duplicate window is dropped by the server. The prefix keeps a
    trigger's dead letters and replies of one event id from deduplicating each other."""

    def make(event: CloudEvent) -> str:
        return f"{prefix}:{event.source}:{event.id}"[:_MAX_MSG_ID]

    return make


class NatsSubjectWriter:
    """Writes CloudEvents to one subject (binary mode by default) and returns once the server has them."""

    def __init__(self, nc: Client, subject: str, *, structured: bool = False, timeout: float = 10.0,
                 msg_id: MsgId | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.subject = subject
        self.structured = structured
        self.timeout = timeout
        self.msg_id = msg_id
        self.name = f"nats:{subject}"
        self._stream: str | None = None
        self._looked_up = -1e18

    async def _covering_stream(self) -> str | None:
        now = time.monotonic()
        if now - self._looked_up < STREAM_LOOKUP_TTL:
            return self._stream
        try:
            stream: str | None = await self.js.find_stream_name_by_subject(self.subject)
        except nats.js.errors.NotFoundError:
            stream = None
        self._stream, self._looked_up = stream, now
        return stream

    async def send(self, event: CloudEvent, key: bytes | None = None) -> int | None:
        """Write one event; returns the stream sequence when JetStream stored it, None for core NATS."""
        del key  # NATS has no record key; `partitionkey` travels as a header
        headers, payload = to_nats_structured(event) if self.structured else to_nats_binary(event)
        if self.msg_id is not None:
            headers[MSG_ID_HEADER] = self.msg_id(event)
        try:
            stream = await self._covering_stream()
            if stream is None:
                await self.nc.publish(self.subject, payload, headers=headers)
                await self.nc.flush(timeout=max(1, round(self.timeout)))
                return None
            try:
                ack = await self.js.publish(self.subject, payload, timeout=self.timeout, stream=stream,
                                            headers=headers)
            except (nats.errors.NoRespondersError, nats.js.errors.NotFoundError):
                self._looked_up = -1e18  # the stream went away: look again next time
                raise
            if ack.duplicate:
                log.info("NATS write deduplicated by the server (already stored)",
                         extra={"subject": self.subject, "event_id": event.id, "stream": stream})
            return int(ack.seq)
        except (TimeoutError, nats.errors.Error) as exc:
            what = f"writing to subject {self.subject!r} failed: {type(exc).__name__}: {exc}"
            size = len(payload) + sum(len(k) + len(v) for k, v in headers.items())
            if isinstance(exc, nats.errors.MaxPayloadError) or (
                    isinstance(exc, nats.js.errors.APIError) and exc.err_code == JS_MESSAGE_TOO_LARGE):
                raise NatsPayloadTooLarge(f"{what} (message of {size} bytes)", size=size) from exc
            permanent = isinstance(exc, (nats.errors.NoRespondersError, nats.errors.AuthorizationError,
                                         nats.js.errors.NotFoundError, nats.js.errors.BadRequestError))
            raise NatsWriteError(what, permanent=permanent) from exc


async def publish_event_nats(
    event: CloudEvent,
    *,
    servers: str | list[str] | None = None,
    subject: str,
    mode: Literal["binary", "structured"] = "binary",
    msg_id: str | None = None,
    timeout: float = 10.0,
) -> int | None:
    """Publish one CloudEvent to `subject` and wait until the server has it.

    JetStream publish with PubAck when a stream covers the subject (returns the stream sequence), else
    core publish + flush (returns None). `servers`: a URL, comma-separated URLs or a list; default
    EVENTBUS_NATS_URL. `msg_id` sets `Nats-Msg-Id` for JetStream deduplication.
    Raises NatsConfigError (no servers) or NatsWriteError (unreachable, refused, timed out).
    """
    urls = servers.split(",") if isinstance(servers, str) else list(servers or [])
    resolved = resolve_servers([u.strip() for u in urls if u.strip()], None)
    try:
        nc = await asyncio.wait_for(
            nats.connect(servers=resolved, connect_timeout=timeout, max_reconnect_attempts=0,
                         allow_reconnect=False),
            timeout + 1,
        )
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise NatsWriteError(f"cannot reach NATS at {','.join(resolved)}: {type(exc).__name__}: {exc}") from exc
    try:
        writer = NatsSubjectWriter(nc, subject, structured=mode == "structured", timeout=timeout,
                                   msg_id=(lambda _: msg_id) if msg_id else None)
        return await writer.send(event)
    finally:
        try:
            await nc.close()
        except nats.errors.Error:
            pass

