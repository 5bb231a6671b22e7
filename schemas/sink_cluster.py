"""Which cluster a dead-letter or reply sink writes to: its own servers, else the source's (with the
source's credentials) when the source is of the same kind, else the runtime's default (`--kafka`,
`--nats`). No I/O: the caller passes the defaults it knows (the runtime its flags, `eventbus validate`
the environment), so both apply the same rule and name the same field when no cluster is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from schemas.trigger import KafkaSink, NatsSink, NatsSource, Sasl, Sink, Tls, Trigger

SinkRole = Literal["dead_letter", "reply", "push"]
"""A sink's job: `spec.delivery.deadLetter`, `spec.delivery.reply`, or `spec.scaling.push` (scaling hints)."""

_FIELD = {"dead_letter": "delivery.deadLetter", "reply": "delivery.reply", "push": "scaling.push"}


class SinkClusterError(ValueError):
    """A sink that reaches no cluster; `field` is its path in the Trigger (`spec.delivery.deadLetter.kafka...`)."""

    def __init__(self, trigger: str, field: str, message: str) -> None:
        super().__init__(f"{trigger}: {field}: {message}")
        self.trigger = trigger
        self.field = field


@dataclass(frozen=True, slots=True)
class KafkaCluster:
    """Where a Kafka sink writes: bootstrap servers (comma-joined) and the security to use there."""

    bootstrap: str
    sasl: Sasl | None
    tls: Tls | None


@dataclass(frozen=True, slots=True)
class NatsCluster:
    """Where a NATS sink writes: server URLs and the spec carrying the credentials (None: none)."""

    servers: tuple[str, ...]
    auth: NatsSource | NatsSink | None


def sink_field(role: SinkRole, kind: str, name: str) -> str:
    return f"spec.{_FIELD[role]}.{kind}.{name}"


def sink_spec(trigger: Trigger, role: SinkRole) -> Sink | None:
    """The trigger's sink for `role`, if it has one."""
    if role == "push":
        return trigger.spec.scaling.push
    sink: Sink | None = getattr(trigger.spec.delivery, role)
    return sink


def _kafka_source(trigger: Trigger) -> tuple[list[str], Sasl | None, Tls | None] | None:
    """The Kafka cluster the trigger reads from (a Kafka source, or an async HTTP trigger's Kafka topic)."""
    src = trigger.spec.source
    if src.kafka is not None:
        return list(src.kafka.bootstrap_servers), src.kafka.sasl, src.kafka.tls
    if src.http is not None and src.http.topic is not None and src.http.topic.kafka is not None:
        topic = src.http.topic.kafka
        return list(topic.bootstrap_servers), topic.sasl, topic.tls
    return None


def kafka_cluster(trigger: Trigger, role: SinkRole, sink: KafkaSink, default: str | None) -> KafkaCluster:
    """The sink's own `bootstrapServers` (with its own `sasl`/`tls`); else a Kafka source's cluster, its
    `sasl`/`tls` unless the sink names its own; else `default` (the runtime's `--kafka`)."""
    if sink.bootstrap_servers:
        return KafkaCluster(",".join(sink.bootstrap_servers), sink.sasl, sink.tls)
    source = _kafka_source(trigger)
    if source is not None:
        servers, sasl, tls = source
        sasl, tls = sink.sasl or sasl, sink.tls or tls
        if servers:
            return KafkaCluster(",".join(servers), sasl, tls)
        if default:
            return KafkaCluster(default, sasl, tls)
    elif default:
        return KafkaCluster(default, sink.sasl, sink.tls)
    raise SinkClusterError(
        trigger.key, sink_field(role, "kafka", "bootstrapServers"),
        "the sink reaches no Kafka cluster: set bootstrapServers here, or read from a Kafka source that sets "
        "bootstrapServers (the sink then uses its cluster, sasl and tls), or give the runtime a default "
        "cluster (eventbus run --kafka, or EVENTBUS_KAFKA_BOOTSTRAP)")


def nats_cluster(trigger: Trigger, role: SinkRole, sink: NatsSink, default: list[str]) -> NatsCluster:
    """The sink's own `servers` (with its own credentials); else a NATS source's servers, its credentials
    unless the sink names its own; else `default` (the runtime's `--nats` or embedded server)."""
    own_auth = sink if sink.has_credentials else None
    if sink.servers:
        return NatsCluster(tuple(sink.servers), own_auth)
    src = trigger.spec.source.nats
    if src is not None:
        auth: NatsSource | NatsSink | None = own_auth or src
        if src.servers:
            return NatsCluster(tuple(src.servers), auth)
        if default:
            return NatsCluster(tuple(default), auth)
    elif default:
        return NatsCluster(tuple(default), own_auth)
    raise SinkClusterError(
        trigger.key, sink_field(role, "nats", "servers"),
        "the sink reaches no NATS server: set servers here, or read from a NATS source that sets servers "
        "(the sink then uses them and their credentials), or give the runtime a default "
        "(eventbus run --nats, or EVENTBUS_NATS_URL)")


def check_sink_clusters(trigger: Trigger, *, kafka_default: str | None,
                        nats_default: list[str]) -> list[SinkClusterError]:
    """Every sink of `trigger` that reaches no cluster with these runtime defaults."""
    problems: list[SinkClusterError] = []
    roles: tuple[SinkRole, ...] = ("dead_letter", "reply", "push")
    for role in roles:
        sink = sink_spec(trigger, role)
        try:
            if sink is not None and sink.kafka is not None:
                kafka_cluster(trigger, role, sink.kafka, kafka_default)
            if sink is not None and sink.nats is not None:
                nats_cluster(trigger, role, sink.nats, nats_default)
        except SinkClusterError as exc:
            problems.append(exc)
    return problems
