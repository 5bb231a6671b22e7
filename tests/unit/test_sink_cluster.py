"""Which cluster a dead-letter or reply sink writes to (schemas.sink_cluster): pure rules."""

from __future__ import annotations

import pytest

from schemas.loader import parse_triggers
from schemas.sink_cluster import SinkClusterError, check_sink_clusters, kafka_cluster, nats_cluster
from schemas.trigger import Sasl, SecretRef, Trigger


def _trigger(source: str, delivery: str) -> Trigger:
    return parse_triggers(f"""\
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: t, namespace: ns}}
spec:
  source: {{{source}}}
  function: {{url: "http://127.0.0.1:9/"}}
  delivery: {{{delivery}}}
""", "t.yaml")[0]


KAFKA_SRC = ("kafka: {bootstrapServers: [a:9092, b:9092], topics: [in], "
             "sasl: {mechanism: PLAIN, username: u, passwordFrom: {env: PW}}, tls: {caFile: ca.pem}}")


def _dl(t: Trigger):  # type: ignore[no-untyped-def]
    assert t.spec.delivery.dead_letter is not None
    return t.spec.delivery.dead_letter


def test_kafka_sink_defaults_to_the_kafka_source_cluster_and_security() -> None:
    t = _trigger(KAFKA_SRC, "deadLetter: {kafka: {topic: dlq}}")
    sink = _dl(t).kafka
    assert sink is not None
    c = kafka_cluster(t, "dead_letter", sink, default="other:9092")
    assert c.bootstrap == "a:9092,b:9092"
    assert c.sasl == Sasl(mechanism="PLAIN", username="u", password_from=SecretRef(env="PW"))
    assert c.tls is not None and c.tls.ca_file == "ca.pem"


def test_kafka_sink_with_own_servers_uses_only_its_own_security() -> None:
    t = _trigger(KAFKA_SRC, "deadLetter: {kafka: {topic: dlq, bootstrapServers: [c:9092]}}")
    sink = _dl(t).kafka
    assert sink is not None
    c = kafka_cluster(t, "dead_letter", sink, default=None)
    assert (c.bootstrap, c.sasl, c.tls) == ("c:9092", None, None)


def test_kafka_sink_security_overrides_the_sources() -> None:
    t = _trigger(KAFKA_SRC, "reply: {kafka: {topic: r, tls: {caFile: other.pem}}}")
    sink = t.spec.delivery.reply.kafka  # type: ignore[union-attr]
    assert sink is not None
    c = kafka_cluster(t, "reply", sink, default=None)
    assert c.bootstrap == "a:9092,b:9092" and c.tls is not None and c.tls.ca_file == "other.pem"
    assert c.sasl is not None and c.sasl.username == "u"


def test_kafka_sink_of_a_non_kafka_source_needs_servers_or_a_runtime_default() -> None:
    t = _trigger('cron: {schedule: "@every 1m"}', "deadLetter: {kafka: {topic: dlq}}")
    sink = _dl(t).kafka
    assert sink is not None
    assert kafka_cluster(t, "dead_letter", sink, default="d:9092").bootstrap == "d:9092"
    with pytest.raises(SinkClusterError) as err:
        kafka_cluster(t, "dead_letter", sink, default=None)
    assert err.value.field == "spec.delivery.deadLetter.kafka.bootstrapServers"
    assert "--kafka" in str(err.value) and "ns/t" in str(err.value)


def test_nats_sink_defaults_to_the_nats_source_servers_and_credentials() -> None:
    t = _trigger("nats: {servers: ['nats://s:4222'], subject: in.>, user: me, passwordFrom: {env: PW}}",
                 "deadLetter: {nats: {subject: dlq}}")
    sink = _dl(t).nats
    assert sink is not None
    c = nats_cluster(t, "dead_letter", sink, default=["nats://d:4222"])
    assert c.servers == ("nats://s:4222",)
    assert c.auth is t.spec.source.nats


def test_nats_sink_own_credentials_and_missing_servers() -> None:
    t = _trigger("http: {path: /h}", "reply: {nats: {subject: r, tokenFrom: {env: TOK}}}")
    sink = t.spec.delivery.reply.nats  # type: ignore[union-attr]
    assert sink is not None
    c = nats_cluster(t, "reply", sink, default=["nats://d:4222"])
    assert c.servers == ("nats://d:4222",) and c.auth is sink
    problems = check_sink_clusters(t, kafka_default=None, nats_default=[])
    assert [p.field for p in problems] == ["spec.delivery.reply.nats.servers"]


def test_nats_sink_credentials_are_checked_like_a_sources() -> None:
    with pytest.raises(ValueError, match="at most one of credsFile, tokenFrom, user"):
        _trigger("http: {path: /h}", "reply: {nats: {subject: r, user: u, tokenFrom: {env: T}}}")
