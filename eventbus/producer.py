"""Producing events: build a CloudEvent at the API edge and write it to a Kafka topic.

Events are built with the `cloudevents` SDK (it fills `id`, `time` and `specversion`, as a producer
should), then carried by our own strict bindings.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from cloudevents.core.v1.event import CloudEvent as SdkEvent

from connectors.kafka import KafkaTopicWriter, make_producer, resolve_bootstrap
from schemas.cloudevent import AttributeValue, CloudEvent


class PublishError(RuntimeError):
    """The event could not be built or written (the message says which)."""


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
    topic: str,
    id: str | None = None,
    key: str | bytes | None = None,
    subject: str | None = None,
    datacontenttype: str | None = None,
    extensions: Mapping[str, AttributeValue] | None = None,
    mode: Literal["binary", "structured"] = "binary",
) -> CloudEvent:
    """Publish one CloudEvent to a Kafka topic and wait for the broker's ack; returns the event sent."""
    event = build_event(type=type, source=source, data=data, id=id, subject=subject,
                        datacontenttype=datacontenttype, extensions=extensions)
    await publish_event(event, kafka=kafka, topic=topic, key=key, mode=mode)
    return event


async def publish_event(
    event: CloudEvent,
    *,
    kafka: str | None = None,
    topic: str,
    key: str | bytes | None = None,
    mode: Literal["binary", "structured"] = "binary",
) -> None:
    bootstrap = resolve_bootstrap([], kafka)
    producer = make_producer(bootstrap=bootstrap)
    try:
        await producer.start()
    except Exception as exc:
        await producer.stop()
        raise PublishError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    try:
        kb = key.encode() if isinstance(key, str) else key
        await KafkaTopicWriter(producer, topic, structured=mode == "structured").send(event, kb)
    except Exception as exc:
        raise PublishError(str(exc)) from exc
    finally:
        await producer.stop()
