"""Producing events: build a CloudEvent at the API edge and write it to a Kafka topic, a NATS subject
(JetStream with ack; fire-and-forget only when asked), or an eventbus HTTP ingress (`POST <url>/topics/<topic>`).

Events are built with the `cloudevents` SDK (it fills `id`, `time` and `specversion`, as a producer
should), then carried by our own strict bindings.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from cloudevents.core.v1.event import CloudEvent as SdkEvent

from connectors.kafka import (
    BOOTSTRAP_ENV,
    KafkaConfigError,
    KafkaTopicWriter,
    KafkaWriteError,
    make_producer,
    resolve_bootstrap,
)
from schemas.cloudevent import AttributeValue, CloudEvent
from schemas.name_syntax import InvalidName, validate_subject, validate_topic


class PublishError(RuntimeError):
    """The event could not be built or written: `what` failed because `why`; `hint` says what to do."""

    def __init__(self, what: str, why: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{what}: {why}" if why else what)
        self.what = what
        self.why = why
        self.hint = hint


@dataclass(frozen=True)
class Receipt:
    """Where an event went and whether the bus stored it (`stream`/`seq` for JetStream)."""

    target: str
    stored: bool
    stream: str | None = None
    seq: int | None = None


class ReservedTopicError(PublishError):
    """The subject or topic is reserved to the broker or to eventbus (`schemas.names`): refused unsent."""


def build_event(
    *,
    type: str,
    source: str,
    data: Any = None,
    id: str | None = None,
    subject: str | None = None,
    datacontenttype: str | None = None,
    extensions: Mapping[str, AttributeValue] | None = None,
) -> CloudEvent:
    """A new CloudEvent; JSON-able data is encoded as JSON (`application/json`), bytes are kept as-is."""
    attrs: dict[str, Any] = {"type": type, "source": source}
    if id is not None:
        attrs["id"] = id
    if subject is not None:
        attrs["subject"] = subject
    if extensions:
        attrs.update(extensions)
    body: bytes | None
    if data is None:
        body = None
    elif isinstance(data, bytes):
        body = data
        datacontenttype = datacontenttype or "application/octet-stream"
    else:
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        datacontenttype = datacontenttype or "application/json"
    if datacontenttype is not None:
        attrs["datacontenttype"] = datacontenttype
    try:
        sdk = SdkEvent(attrs, None)
    except Exception as exc:  # the SDK raises its own validation error types
        raise PublishError("invalid event", str(exc), "check --type, --source and --id") from exc
    out: dict[str, AttributeValue] = {}
    for k, v in sdk.get_attributes().items():
        if v is None:
            continue
        if isinstance(v, datetime):
            out[k] = v.isoformat().replace("+00:00", "Z")
        elif isinstance(v, str | int | bool):
            out[k] = v
        else:
            out[k] = str(v)
    return CloudEvent(out, body)


async def publish(
    *,
    type: str,
    source: str,
    data: Any = None,
    kafka: str | None = None,
    topic: str | None = None,
    id: str | None = None,
    key: str | bytes | None = None,
    subject: str | None = None,
    datacontenttype: str | None = None,
    extensions: Mapping[str, AttributeValue] | None = None,
    mode: Literal["binary", "structured"] = "binary",
    nats: str | None = None,
    http: str | None = None,
    ce_subject: str | None = None,
    core: bool = False,
    token: str | None = None,
) -> CloudEvent:
    """Publish one CloudEvent and wait until the bus has stored it; returns the event sent.

    Where to: `http=URL, topic=T` posts to an eventbus ingress (`URL/topics/T`); `nats=URL, subject=S`
    publishes to a NATS subject with a JetStream ack (a subject no stream covers is an error; `core=True`
    publishes fire-and-forget instead; with `nats=`, `subject` names the NATS subject and `ce_subject` sets the
    event's `subject` attribute); otherwise `kafka=` (default EVENTBUS_KAFKA_BOOTSTRAP) and `topic=`.
    Without `nats=`, `subject` is the event's `subject` attribute, as before. `key` is the Kafka record key,
    and the `partitionkey` extension over NATS and HTTP. Names are checked before any network call."""
    attr_subject = ce_subject if nats is not None else (ce_subject or subject)
    nats_subject = (subject or topic) if nats is not None else None
    check_target(topic=topic, nats=nats, subject=nats_subject)
    event = build_event(type=type, source=source, data=data, id=id, subject=attr_subject,
                        datacontenttype=datacontenttype, extensions=extensions)
    await publish_event(event, kafka=kafka, topic=topic, key=key, mode=mode, nats=nats, subject=nats_subject,
                        http=http, core=core, token=token)
    return event


def check_target(*, topic: str | None, nats: str | None, subject: str | None) -> None:
    """Refuse a missing or malformed topic/subject before anything is sent (PublishError naming it)."""
    if nats is not None:
        if not subject:
            raise PublishError("no subject", "publishing to NATS needs a subject", "pass --subject S")
        try:
            validate_subject(subject)
        except InvalidName as exc:
            raise PublishError(f"invalid name {subject!r}", exc.why, "write tokens like orders.new") from exc
        return
    if not topic:
        raise PublishError("no topic", "publishing to Kafka or an HTTP ingress needs a topic", "pass --topic T")
    try:
        validate_topic(topic)
    except InvalidName as exc:
        raise PublishError(f"invalid name {topic!r}", exc.why, "topic names are 1-249 of A-Z a-z 0-9 . _ -") from exc


async def publish_event(
    event: CloudEvent,
    *,
    kafka: str | None = None,
    topic: str | None = None,
    key: str | bytes | None = None,
    mode: Literal["binary", "structured"] = "binary",
    nats: str | None = None,
    subject: str | None = None,
    http: str | None = None,
    core: bool = False,
    token: str | None = None,
) -> Receipt:
    """Write a built event to Kafka (`kafka`/`topic`), NATS (`nats`/`subject`) or an ingress (`http`/`topic`,
    with the publisher's bearer `token`). Reserved subjects and topics raise ReservedTopicError.

    Returns once the bus stored it (Kafka acks=all, JetStream PubAck, the ingress' 202), or with `core=True`
    once the NATS server has it (nothing stored)."""
    check_target(topic=topic, nats=nats, subject=subject)
    _refuse_reserved(subject if nats is not None else topic, "nats" if nats is not None else
                     ("kafka" if http is None else None))
    if key is not None and (nats is not None or http is not None):
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        event = event.with_attributes(partitionkey=text)  # no record key on these transports: the extension
    if nats is not None:
        assert subject is not None
        return await _publish_nats(event, nats, subject, mode, core=core)
    assert topic is not None
    if core:
        raise PublishError("--core", "fire-and-forget applies to NATS only", "drop --core, or use --nats")
    if http is not None:
        return await _publish_http(event, http, topic, mode, token=token)
    try:
        bootstrap = resolve_bootstrap([], kafka)
    except KafkaConfigError as exc:
        raise PublishError("no Kafka configured", "no bootstrap servers given",
                           f"pass --kafka HOST:PORT or set {BOOTSTRAP_ENV}") from exc
    producer = make_producer(bootstrap=bootstrap)
    try:
        try:
            await producer.start()
        except Exception as exc:
            raise PublishError(f"cannot reach Kafka at {bootstrap}", _reason(exc),
                               "is the broker running? check --kafka / " + BOOTSTRAP_ENV) from exc
        try:  # the writer checks the topic exists first (5 s), naming it when it does not
            kb = key.encode() if isinstance(key, str) else key
            await KafkaTopicWriter(producer, topic, structured=mode == "structured").send(event, kb)
        except KafkaWriteError as exc:
            hint = "create it first (e.g. examples/kafka/create_topic.py)" if "does not exist" in str(exc) else None
            raise PublishError(f"{exc} (Kafka at {bootstrap})", None, hint) from exc
    finally:
        await producer.stop()
    return Receipt(f"kafka:{topic}", stored=True)


def _reason(exc: BaseException) -> str:
    """An exception as a short reason, never empty (TimeoutError() has no message)."""
    text = str(exc).strip()
    if isinstance(exc, TimeoutError) and not text:
        return "timed out"
    name = type(exc).__name__
    return text if text.startswith(name) else (f"{name}: {text}" if text else name)


async def _publish_nats(event: CloudEvent, servers: str, subject: str,
                        mode: Literal["binary", "structured"], *, core: bool, timeout: float = 5.0) -> Receipt:
    """One connection, one try: JetStream publish with PubAck (the subject must be in a stream), or
    `core`: publish + flush. nats-py's own error logging is replaced by the one error raised here."""
    import nats
    import nats.errors
    import nats.js.errors

    from connectors.nats_client import NATS_URL_ENV, NatsConfigError, resolve_servers
    from schemas.nats_binding import to_nats_binary, to_nats_structured

    try:
        urls = resolve_servers([u.strip() for u in servers.split(",") if u.strip()], None)
    except NatsConfigError as exc:
        raise PublishError("no NATS configured", "no server URL given",
                           f"pass --nats nats://HOST:PORT or set {NATS_URL_ENV}") from exc
    where = ",".join(urls)
    errors: list[Exception] = []
    failed = asyncio.Event()

    async def on_error(exc: Exception) -> None:
        errors.append(exc)
        failed.set()

    # nats-py keeps retrying a refused first connection even with allow_reconnect=False: the first error ends it
    connecting = asyncio.ensure_future(nats.connect(
        servers=urls, connect_timeout=timeout, max_reconnect_attempts=0, allow_reconnect=False, error_cb=on_error))
    failing = asyncio.ensure_future(failed.wait())
    await asyncio.wait({connecting, failing}, timeout=timeout + 1, return_when=asyncio.FIRST_COMPLETED)
    failing.cancel()
    if not connecting.done() or connecting.exception() is not None:
        connecting.cancel()
        try:
            await connecting
        except (asyncio.CancelledError, Exception):
            pass
        cause: BaseException = errors[-1] if errors else TimeoutError(f"no answer in {timeout + 1:g}s")
        raise PublishError(f"cannot reach NATS at {where}", _reason(cause), "is the server running? check --nats")
    nc = connecting.result()
    try:
        headers, payload = to_nats_structured(event) if mode == "structured" else to_nats_binary(event)
        try:
            if core:
                await nc.publish(subject, payload, headers=headers)
                await nc.flush(timeout=round(timeout))
                return Receipt(f"nats:{subject}", stored=False)
            js = nc.jetstream(timeout=timeout)
            try:
                stream = await js.find_stream_name_by_subject(subject)
            except nats.js.errors.NotFoundError:
                raise PublishError(f"subject {subject!r} is not stored", "no JetStream stream covers it",
                                   "add it to a stream's subjects, or pass --core to publish without "
                                   "storage") from None
            ack = await js.publish(subject, payload, timeout=timeout, stream=stream, headers=headers)
            return Receipt(f"nats:{subject}", stored=True, stream=ack.stream, seq=int(ack.seq))
        except (TimeoutError, nats.errors.Error) as exc:
            raise PublishError(f"writing to subject {subject!r} failed", _reason(exc),
                               "check the NATS server and its JetStream") from exc
    finally:
        try:
            await nc.close()
        except nats.errors.Error:
            pass


def _refuse_reserved(name: str | None, bus: str | None) -> None:
    from schemas.names import ReservedName, check_publishable

    try:
        if name:
            check_publishable(name, bus=bus)
    except ReservedName as exc:
        raise ReservedTopicError(str(exc)) from None


async def _publish_http(event: CloudEvent, url: str, topic: str, mode: Literal["binary", "structured"],
                        timeout: float = 30.0, *, token: str | None = None) -> Receipt:
    """POST to the ingress; its 202 comes only after the broker's ack."""
    import aiohttp

    from schemas.http_binding import to_binary, to_structured

    headers, body = to_structured(event) if mode == "structured" else to_binary(event)
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    target = f"{url.rstrip('/')}/topics/{topic}"
    try:
        async with aiohttp.ClientSession() as session, session.post(
            target, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            text = (await resp.read()).decode("utf-8", "replace").strip()
            if resp.status != 202:
                raise PublishError(f"POST {target} answered {resp.status}", _answer(text),
                                   "see the ingress' log" if resp.status >= 500 else None)
    except aiohttp.InvalidURL as exc:
        raise PublishError(f"invalid --http URL {url!r}", _reason(exc), "use http://HOST:PORT") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PublishError(f"cannot reach the eventbus ingress at {url}", _reason(exc),
                           "is `eventbus up` or `eventbus run --http-port` running there?") from exc
    return Receipt(f"http:{target}", stored=True)


def _answer(text: str) -> str:
    """The ingress' JSON error message, or its body."""
    try:
        body = json.loads(text)
    except ValueError:
        return text or "(empty body)"
    if isinstance(body, dict):
        msg = body.get("message") or body.get("error")
        if isinstance(msg, str):
            return msg
    return text
