"""Producing events: build a CloudEvent at the API edge and write it to a Kafka topic, a NATS subject
(JetStream with ack when a stream covers it), or an eventbus HTTP ingress (`POST <url>/topics/<topic>`).

Events are built with the `cloudevents` SDK (it fills `id`, `time` and `specversion`, as a producer
should), then carried by our own strict bindings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from cloudevents.core.v1.event import CloudEvent as SdkEvent

from connectors.kafka import KafkaTopicWriter, KafkaWriteError, make_producer, resolve_bootstrap
from schemas.cloudevent import AttributeValue, CloudEvent


class PublishError(RuntimeError):
    """The event could not be built or written (the message says which)."""


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
        raise PublishError(f"invalid event: {exc}") from exc
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
    token: str | None = None,
) -> CloudEvent:
    """Publish one CloudEvent and wait until the bus has it; returns the event sent.

    Where to: `http=URL, topic=T` posts to an eventbus ingress (`URL/topics/T`); `nats=URL, subject=S`
    publishes to a NATS subject (with `nats=`, `subject` names the NATS subject and `ce_subject` sets the
    event's `subject` attribute); otherwise `kafka=` (default EVENTBUS_KAFKA_BOOTSTRAP) and `topic=`.
    Without `nats=`, `subject` is the event's `subject` attribute, as before."""
    attr_subject = ce_subject if nats is not None else (ce_subject or subject)
    event = build_event(type=type, source=source, data=data, id=id, subject=attr_subject,
                        datacontenttype=datacontenttype, extensions=extensions)
    nats_subject = (subject or topic) if nats is not None else None
    await publish_event(event, kafka=kafka, topic=topic, key=key, mode=mode, nats=nats, subject=nats_subject,
                        http=http, token=token)
    return event


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
    token: str | None = None,
) -> None:
    """Write a built event to Kafka (`kafka`/`topic`), NATS (`nats`/`subject`) or an ingress (`http`/`topic`,
    with the publisher's bearer `token`). Reserved subjects and topics raise ReservedTopicError."""
    _refuse_reserved(subject if nats is not None else topic, "nats" if nats is not None else
                     ("kafka" if http is None else None))
    if nats is not None:
        if not subject:
            raise PublishError("publishing to NATS needs a subject")
        await _publish_nats(event, nats, subject, mode)
        return
    if not topic:
        raise PublishError("publishing to Kafka or an HTTP ingress needs a topic")
    if http is not None:
        await _publish_http(event, http, topic, mode, token=token)
        return
    bootstrap = resolve_bootstrap([], kafka)
    producer = make_producer(bootstrap=bootstrap)
    try:
        await producer.start()
    except Exception as exc:
        await producer.stop()
        raise PublishError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:  # the writer checks the topic exists first (5 s), naming it when it does not
        kb = key.encode() if isinstance(key, str) else key
        await KafkaTopicWriter(producer, topic, structured=mode == "structured").send(event, kb)
    except KafkaWriteError as exc:
        raise PublishError(f"{exc} (Kafka at {bootstrap})") from exc
    finally:
        await producer.stop()


async def _publish_nats(event: CloudEvent, servers: str, subject: str,
                        mode: Literal["binary", "structured"]) -> None:
    from connectors.nats_client import NatsConfigError
    from connectors.nats_publish import NatsWriteError, publish_event_nats

    try:
        await publish_event_nats(event, servers=servers, subject=subject, mode=mode)
    except (NatsConfigError, NatsWriteError) as exc:
        raise PublishError(str(exc)) from exc


def _refuse_reserved(name: str | None, bus: str | None) -> None:
    from schemas.names import ReservedName, check_publishable

    try:
        if name:
            check_publishable(name, bus=bus)
    except ReservedName as exc:
        raise ReservedTopicError(str(exc)) from None


async def _publish_http(event: CloudEvent, url: str, topic: str, mode: Literal["binary", "structured"],
                        timeout: float = 30.0, *, token: str | None = None) -> None:
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
            text = (await resp.read()).decode("utf-8", "replace")
            if resp.status != 202:
                raise PublishError(f"POST {target}: {resp.status} {text.strip()}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PublishError(f"POST {target}: {type(exc).__name__}: {exc}") from exc
