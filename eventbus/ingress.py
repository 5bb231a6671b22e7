"""The runtime's HTTP ingress: one shared server per runtime, the `http` controller factory, and the bus
that `POST /topics/<name>` writes to.

The ingress starts eagerly when `--http-port` is given (so `/topics` works without HTTP triggers), or
with the first HTTP trigger on port 8080. It stops after every trigger has stopped (a `Runtime.on_stop`
hook), so in-flight webhook requests finish during the drain.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Literal

from prometheus_client import Gauge

from connectors.bus import KafkaTopics, NatsTopics, NoStreamHook
from connectors.http_ingress import HttpIngress, IngressConfig, TopicPublisher
from connectors.kafka import BOOTSTRAP_ENV
from connectors.nats_client import NATS_URL_ENV
from eventbus.admin import admin_routes
from schemas.trigger import JetStream, KafkaSink, KafkaSource, NatsSource, Source, Trigger
from triggers.delivery import Pipeline
from triggers.http_trigger import HttpTrigger, InnerController
from triggers.kafka_trigger import KafkaTrigger

if TYPE_CHECKING:
    from eventbus.runtime import Controller, Runtime

DEFAULT_HTTP_PORT = 8080


def topics_bus(rt: Runtime) -> Literal["kafka", "nats"] | None:
    """The bus `/topics` and topic-less async triggers use: NATS when the runtime has one (`--nats`, the
    embedded server), else Kafka (`--kafka` or EVENTBUS_KAFKA_BOOTSTRAP), else NATS from EVENTBUS_NATS_URL."""
    if rt.config.nats:
        return "nats"
    if rt.config.kafka or os.environ.get(BOOTSTRAP_ENV):
        return "kafka"
    if os.environ.get(NATS_URL_ENV):
        return "nats"
    return None


def _publisher(rt: Runtime, bus: str, servers: list[str], on_no_stream: NoStreamHook | None,
               kafka: KafkaSink | None = None) -> TopicPublisher:
    if bus == "nats":
        return NatsTopics(lambda: rt.nats_client(servers), on_no_stream=on_no_stream)
    return KafkaTopics(lambda: rt.kafka_producer(servers, kafka.sasl if kafka else None, kafka.tls if kafka else None))


_hooks: dict[int, NoStreamHook] = {}


def set_no_stream_hook(rt: Runtime, hook: NoStreamHook) -> None:
    """Embedded mode: when no stream covers a subject, `hook` extends the embedded stream (see eventbus.up)."""
    _hooks[id(rt)] = hook


async def ensure_ingress(rt: Runtime) -> HttpIngress:
    """The runtime's ingress, created and started on first use."""
    if rt.ingress is not None:
        return rt.ingress
    cfg = rt.config
    bus = topics_bus(rt)
    publisher = _publisher(rt, bus, [], _hooks.get(id(rt))) if bus is not None else None
    ingress = HttpIngress(
        IngressConfig(port=cfg.http_port if cfg.http_port is not None else DEFAULT_HTTP_PORT, host=cfg.http_host,
                      max_body=cfg.max_body, max_in_flight=cfg.http_max_in_flight, limits=cfg.ingress_limits),
        topics=publisher,
        extra_routes=admin_routes(rt.ready, details=rt.readiness),
        publishers=cfg.publishers,
    )
    rt.ingress = ingress

    async def stop() -> None:
        await ingress.stop()
        rt.ingress = None
        _hooks.pop(id(rt), None)

    rt.on_stop.append(stop)
    try:
        await ingress.start()
    except OSError as exc:  # not transient: retrying would report triggers ready that nobody can reach
        raise IngressBindError(f"HTTP ingress cannot listen on port {ingress.config.port}: "
                               f"{exc.strerror or exc}") from exc
    return ingress


class IngressBindError(RuntimeError):
    """The HTTP ingress cannot bind its port (in use, not permitted): a fatal startup error."""


def _inner_pipeline(pipeline: Pipeline) -> Pipeline:
    """The consumer's pipeline: the same function, sinks and metrics, except that its lag goes to a private
    gauge (the HTTP trigger publishes consumer lag + HTTP in flight as the trigger's lag)."""
    metrics = dataclasses.replace(pipeline.metrics, lag=Gauge("eventbus_inner_lag", "private", registry=None))
    return Pipeline(pipeline.trigger, gateway=pipeline.gateway, metrics=metrics,
                    dead_letter=pipeline.dead_letter_sink, reply=pipeline.reply_sink)


def _derived(trigger: Trigger, source: Source) -> Trigger:
    """The trigger with its source replaced by the topic it parks events on (name, function, delivery kept)."""
    return trigger.model_copy(update={"spec": trigger.spec.model_copy(update={"source": source})})


def _stream_name(trigger: Trigger) -> str:
    return f"eventbus-http-{trigger.metadata.namespace}-{trigger.metadata.name}".replace(".", "_")


async def http_controller(rt: Runtime, trigger: Trigger, pipeline: Pipeline) -> Controller:
    """CONTROLLERS["http"]: adds the trigger's path to the shared ingress (started on first use)."""
    src = trigger.spec.source.http
    assert src is not None
    ingress = await ensure_ingress(rt)
    if src.mode == "sync":
        return HttpTrigger(trigger, pipeline, ingress=ingress)
    hook = _hooks.get(id(rt))
    default_topic = f"http.{trigger.metadata.namespace}.{trigger.metadata.name}"
    if src.topic is not None and src.topic.kafka is not None:
        bus, topic, servers = "kafka", src.topic.kafka.topic, list(src.topic.kafka.bootstrap_servers)
    elif src.topic is not None and src.topic.nats is not None:
        bus, topic, servers = "nats", src.topic.nats.subject, list(src.topic.nats.servers)
    else:
        found = topics_bus(rt)
        if found is None:
            raise ValueError(f"{trigger.key}: async HTTP trigger has no topic and the runtime has no bus")
        bus, topic, servers = found, default_topic, []
    inner_pipeline = _inner_pipeline(pipeline)

    async def make_inner() -> InnerController:
        if bus == "kafka":
            sec = src.topic.kafka if src.topic is not None else None
            derived = _derived(trigger, Source(kafka=KafkaSource(topics=[topic], bootstrap_servers=servers,
                                                                 initial_offset="earliest",
                                                                 sasl=sec.sasl if sec else None,
                                                                 tls=sec.tls if sec else None)))
            return KafkaTrigger(derived, inner_pipeline, default_bootstrap=rt.config.kafka,
                                client_id=rt.config.client_id)
        from eventbus.runtime import CONTROLLERS

        stream = await _covering_stream(rt, servers, topic)
        if stream is None and hook is not None and await hook(topic):
            stream = await _covering_stream(rt, servers, topic)
        js = JetStream(stream=stream or _stream_name(trigger), create_stream=stream is None)
        derived = _derived(trigger, Source(nats=NatsSource(servers=servers, subject=topic, jetstream=js)))
        inner: InnerController = await CONTROLLERS["nats"](rt, derived, inner_pipeline)
        return inner

    return HttpTrigger(trigger, pipeline, ingress=ingress,
                       publisher=_publisher(rt, bus, servers, hook, src.topic.kafka if src.topic else None),
                       topic=topic, make_inner=make_inner)


async def _covering_stream(rt: Runtime, servers: list[str], subject: str) -> str | None:
    import nats.js.errors

    nc = await rt.nats_client(servers)
    try:
        name: str = await nc.jetstream().find_stream_name_by_subject(subject)
        return name
    except nats.js.errors.NotFoundError:
        return None
