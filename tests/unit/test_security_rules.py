"""Pure rules of issue 8: reserved names, the publishers file, token lookup, rate buckets, replay memory,
timestamped and rotated HMAC, and the SSRF policy."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from connectors.gateway import UrlPolicy, UrlRefused
from connectors.http_auth import (
    AuthConfigError,
    Authenticator,
    PublisherAuth,
    Replayed,
    ReplayGuard,
    Unauthorized,
    sign,
)
from connectors.http_ingress import IngressLimits, RateLimiter, is_loopback_host
from eventbus.cli import build_parser
from eventbus.security_flags import SecurityConfigError, security_settings
from schemas.errors import TriggerSpecError
from schemas.loader import parse_triggers
from schemas.names import ReservedName, check_publishable, reserved_reason
from schemas.publishers import PublishersFileError, parse_publishers
from schemas.trigger import HttpAuth

RESERVED_SUBJECTS = ["$JS.API.STREAM.PURGE.EVENTBUS", "$JS.API.STREAM.DELETE.X", "$JS.API.CONSUMER.DELETE.S.C",
                     "$KV.eventbus_cron.default-tick", "$O.bucket.x", "$SYS.REQ.SERVER.PING", "_INBOX.abc",
                     "$anything", "$G", "http.shop.github", "http.ns.a.b"]
RESERVED_TOPICS = ["__consumer_offsets", "__transaction_state", "__anything"]


@pytest.mark.parametrize("name", RESERVED_SUBJECTS + RESERVED_TOPICS)
def test_reserved_names_are_refused(name: str) -> None:
    with pytest.raises(ReservedName) as err:
        check_publishable(name)
    assert name in str(err.value) and "reserved" in str(err.value)


@pytest.mark.parametrize("name", ["orders", "orders.created", "http", "http.x", "payments.eu.1", "_internal",
                                  "JS.API", "my_$topic", "in.$JS"])
def test_ordinary_names_pass(name: str) -> None:
    check_publishable(name)


def test_bus_specific_rules_and_dynamic_topics() -> None:
    assert reserved_reason("__consumer_offsets", bus="nats") is None  # a NATS subject may start with __
    assert reserved_reason("$JS.API.INFO", bus="kafka") is None  # not a valid Kafka name anyway (400 later)
    assert reserved_reason("http.ns.name", internal=False) is None  # the trigger's own topic setting
    with pytest.raises(ReservedName):
        check_publishable("hooks.custom", also={"hooks.custom"})


def _trigger(delivery: str, source: str = "kafka: {topics: [in]}") -> str:
    return ("apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {name: t}\nspec:\n"
            f"  source: {{{source}}}\n  function: {{url: 'http://127.0.0.1:1'}}\n  delivery: {delivery}\n")


@pytest.mark.parametrize(("delivery", "where"), [
    ("{reply: {nats: {subject: '$JS.API.STREAM.PURGE.EVENTBUS'}}}", "delivery.reply.nats.subject"),
    ("{deadLetter: {nats: {subject: '_INBOX.x'}}}", "delivery.deadLetter.nats.subject"),
    ("{deadLetter: {kafka: {topic: __consumer_offsets}}}", "delivery.deadLetter.kafka.topic"),
    ("{reply: {kafka: {topic: __transaction_state}}}", "delivery.reply.kafka.topic"),
    ("{reply: {nats: {subject: http.shop.github}}}", "delivery.reply.nats.subject"),
])
def test_a_trigger_whose_sink_is_reserved_is_invalid(delivery: str, where: str) -> None:
    with pytest.raises(TriggerSpecError) as err:
        parse_triggers(_trigger(delivery), "t.yaml")
    assert where in str(err.value) and "reserved" in str(err.value)


def test_async_http_topic_may_not_be_a_system_subject() -> None:
    src = "http: {path: /h, mode: async, topic: {nats: {subject: '$KV.eventbus_cron.x'}}}"
    with pytest.raises(TriggerSpecError):
        parse_triggers(_trigger("{}", src), "t.yaml")
    ok = "http: {path: /h, mode: async, topic: {nats: {subject: http.default.t}}}"
    assert parse_triggers(_trigger("{}", ok), "t.yaml")


# --- publishers file --------------------------------------------------------------------------

FILE = """
publishers:
  - name: shop-backend
    tokenFrom: {env: SEC_SHOP_TOKEN}
    topics: ["orders.>", "payments.*"]
  - name: billing
    tokenFrom: {file: TOKEN_FILE}
    topics: [invoices]
"""


def test_publishers_file_and_token_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEC_SHOP_TOKEN", "shop-token-1")
    (tmp_path / "tok").write_text("bill-token-2\n")
    path = tmp_path / "publishers.yaml"
    path.write_text(FILE.replace("TOKEN_FILE", str(tmp_path / "tok")))
    auth = PublisherAuth.from_file(str(path))
    shop = auth.identify("Bearer shop-token-1")
    assert shop.name == "shop-backend" and auth.identify("bearer bill-token-2").name == "billing"
    assert shop.allows("orders.eu.new") and shop.allows("payments.card")
    assert not shop.allows("payments.card.refund") and not shop.allows("orders") and not shop.allows("invoices")
    for header in (None, "", "Bearer", "Bearer nope", "Basic shop-token-1", "shop-token-1"):
        with pytest.raises(Unauthorized) as err:
            auth.identify(header)
        assert err.value.challenge == "Bearer"
    assert "shop-token-1" not in repr(auth) and "shop-token-1" not in repr(shop)


@pytest.mark.parametrize(("text", "where"), [
    ("publishers: []", "publishers"),
    ("publishers: [{name: a, tokenFrom: {}, topics: [x]}]", "publishers.0.tokenFrom"),
    ("publishers: [{name: a, tokenFrom: {env: A, file: /f}, topics: [x]}]", "publishers.0.tokenFrom"),
    ("publishers: [{name: a, tokenFrom: {env: A}, topics: []}]", "publishers.0.topics"),
    ("publishers: [{name: a, tokenFrom: {env: A}, topics: ['a.>.b']}]", "publishers.0"),
    ("publishers: [{name: a, tokenFrom: {env: A}, topics: ['a..b']}]", "publishers.0"),
    ("publishers: [{name: a, tokenFrom: {env: A}, topics: [x], token: inline}]", "publishers.0.token"),
])
def test_publishers_file_errors_name_the_field(text: str, where: str) -> None:
    with pytest.raises(PublishersFileError) as err:
        parse_publishers(text, "p.yaml")
    assert str(err.value).startswith(f"p.yaml: {where}")


def test_missing_or_shared_tokens_fail_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("publishers: [{name: a, tokenFrom: {env: SEC_UNSET_VAR}, topics: [x]}]")
    monkeypatch.delenv("SEC_UNSET_VAR", raising=False)
    with pytest.raises(AuthConfigError, match="SEC_UNSET_VAR is not set"):
        PublisherAuth.from_file(str(path))
    monkeypatch.setenv("SEC_T1", "same")
    monkeypatch.setenv("SEC_T2", "same")
    path.write_text("publishers: [{name: a, tokenFrom: {env: SEC_T1}, topics: [x]},"
                    " {name: b, tokenFrom: {env: SEC_T2}, topics: [y]}]")
    with pytest.raises(AuthConfigError, match="same token") as err:
        PublisherAuth.from_file(str(path))
    assert "same'" not in str(err.value)
    args = build_parser().parse_args(["run", "-f", "x", "--publishers", str(path)])
    with pytest.raises(SecurityConfigError):
        security_settings(args)


def test_security_flags_defaults() -> None:
    run = security_settings(build_parser().parse_args(["run", "-f", "x"]))
    up = security_settings(build_parser().parse_args(["up"]))
    assert (run["http_host"], up["http_host"]) == ("0.0.0.0", "127.0.0.1")
    assert run["publishers"] is None and run["ingress_limits"] == IngressLimits()
    custom = security_settings(build_parser().parse_args(
        ["up", "--host", "0.0.0.0", "--rate-limit", "5", "--rate-burst", "2", "--body-timeout", "2s",
         "--max-headers", "20", "--max-header-size", "4096", "--max-connections", "10", "--idle-timeout", "5s",
         "--allow-url", "10.0.0.0/8", "--allow-url", "*.svc.cluster.local"]))
    assert custom["ingress_limits"] == IngressLimits(max_header_size=4096, max_headers=20, body_timeout=2.0,
                                                     rate_limit=5.0, rate_burst=2, max_connections=10,
                                                     idle_timeout=5.0)
    assert custom["allow_url"] == ("10.0.0.0/8", "*.svc.cluster.local")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["up", "--body-timeout", "0"])
    with pytest.raises(SecurityConfigError, match="--allow-url"):
        security_settings(build_parser().parse_args(["up", "--allow-url", "a/b c"]))


def test_loopback_addresses() -> None:
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "10.0.0.1", "example.com", ""):
        assert not is_loopback_host(host), host


def test_rate_limiter_buckets() -> None:
    rl = RateLimiter(rate=2.0, burst=3.0)
    assert [rl.take("a", 0.0) for _ in range(3)] == [None, None, None]
    wait = rl.take("a", 0.0)
    assert wait is not None and wait == pytest.approx(0.5)
    assert rl.take("b", 0.0) is None  # per key
    assert rl.take("a", 0.5) is None  # refilled at 2/s
    assert RateLimiter(0, 1).take("a") is None  # 0 = no limit
    small = RateLimiter(rate=1.0, burst=1.0, max_keys=2)
    for k in "abc":
        small.take(k, 0.0)
    assert len(small._buckets) == 2


# --- webhook HMAC: timestamp, replay, rotation --------------------------------------------------


def _hmac_auth(monkeypatch: pytest.MonkeyPatch, **extra: object) -> Authenticator:
    monkeypatch.setenv("SEC_OLD", "old-secret")
    monkeypatch.setenv("SEC_NEW", "new-secret")
    spec = {"hmac": {"secretsFrom": [{"env": "SEC_OLD"}, {"env": "SEC_NEW"}], "timestampHeader": "X-Timestamp",
                     "tolerance": "5m", **extra}}
    return Authenticator.from_spec(HttpAuth.model_validate(spec))


def test_timestamped_signature_replay_and_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    auth = _hmac_auth(monkeypatch)
    now = 1_800_000_000
    body = b'{"a":1}'

    def headers(secret: bytes, ts: int, delivery: str | None = None, b: bytes = body) -> dict[str, str]:
        h = {"X-Hub-Signature-256": sign(secret, b, timestamp=ts), "X-Timestamp": str(ts)}
        return {**h, "X-GitHub-Delivery": delivery} if delivery else h

    auth.check(headers(b"old-secret", now, "d1"), body, now=now)  # either secret of the rotation passes
    auth.check(headers(b"new-secret", now, "d2"), body, now=now)
    with pytest.raises(Replayed):  # the same delivery again
        auth.check(headers(b"new-secret", now, "d2"), body, now=now + 1)
    with pytest.raises(Replayed):  # the same signed bytes under another (unsigned) delivery id
        auth.check(headers(b"new-secret", now, "d3"), body, now=now + 1)
    with pytest.raises(Replayed):  # the same delivery id re-signed later
        auth.check(headers(b"new-secret", now + 10, "d1"), body, now=now + 10)
    for bad in (headers(b"retired-secret", now), headers(b"new-secret", now - 301),
                headers(b"new-secret", now + 301), {"X-Hub-Signature-256": sign(b"new-secret", body)},
                {**headers(b"new-secret", now), "X-Timestamp": "yesterday"},
                headers(b"new-secret", now, b=b"other")):
        with pytest.raises(Unauthorized):
            auth.check(bad, body, now=now)
    with pytest.raises(Unauthorized, match="tolerance"):
        auth.check(headers(b"new-secret", now - 301, "d9"), body, now=now)
    claim = auth.check(headers(b"old-secret", now + 5, "d4"), body, now=now + 5)
    claim.release()  # not accepted (e.g. the function failed): the sender's retry passes
    auth.check(headers(b"old-secret", now + 5, "d4"), body, now=now + 6)
    # remembered for the tolerance window only, in bounded memory
    assert auth.replay is not None
    auth.check(headers(b"new-secret", now + 700, "d1"), body, now=now + 700)
    assert len(auth.replay) == 2
    assert "secret" not in repr(auth)


def test_replay_guard_is_bounded() -> None:
    guard = ReplayGuard(capacity=3)
    for i in range(10):
        assert guard.claim([f"k{i}"], until=100.0, now=0.0)
    assert len(guard) == 3
    assert not guard.claim(["k9"], until=100.0, now=1.0)
    assert guard.claim(["k0"], until=100.0, now=1.0)  # forgotten (oldest first)


def test_hmac_spec_needs_exactly_one_secret_source() -> None:
    with pytest.raises(ValueError, match="exactly one of secretFrom, secretsFrom"):
        HttpAuth.model_validate({"hmac": {}})
    with pytest.raises(ValueError, match="exactly one of secretFrom, secretsFrom"):
        HttpAuth.model_validate({"hmac": {"secretFrom": {"env": "A"}, "secretsFrom": [{"env": "B"}]}})


# --- SSRF policy --------------------------------------------------------------------------------


def test_url_policy_defaults() -> None:
    policy = UrlPolicy()
    for ip in ("169.254.169.254", "169.254.1.1", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254"):
        with pytest.raises(UrlRefused, match="SSRF"):
            policy.check("h", ip)
    for ip in ("127.0.0.1", "::1", "10.1.2.3", "192.168.0.5", "172.16.0.1", "fd00::1", "93.184.216.34"):
        policy.check("h", ip)


def test_url_policy_rules() -> None:
    policy = UrlPolicy.parse(["10.0.0.0/8", "*.svc.cluster.local", "http://gateway.example:8080/x"])
    policy.check("10.1.2.3", "10.1.2.3")
    policy.check("fn.ns.svc.cluster.local", "172.20.0.4")
    policy.check("gateway.example", "203.0.113.9")
    with pytest.raises(UrlRefused, match="no --allow-url rule"):
        policy.check("127.0.0.1", "127.0.0.1")
    with pytest.raises(UrlRefused, match="metadata"):  # a matching name cannot lead to the metadata address
        policy.check("evil.svc.cluster.local", "169.254.169.254")
    UrlPolicy.parse(["169.254.169.254"]).check("h", "169.254.169.254")  # explicit CIDR rules win
    with pytest.raises(ValueError):
        UrlPolicy.parse(["not a host"])


def test_parser_knows_token_flag() -> None:
    args = build_parser().parse_args(["publish", "--http", "http://x", "--topic", "t", "--type", "t",
                                      "--source", "s", "--token", "abc"])
    assert isinstance(args, argparse.Namespace) and args.token == "abc"
