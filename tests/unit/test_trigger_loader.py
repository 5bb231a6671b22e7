"""Loading Trigger YAML: values and defaults, and every problem reported at once with a precise message."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from schemas.errors import SchemaError, SpecProblem, TriggerSpecError
from schemas.loader import load_triggers, parse_triggers
from schemas.trigger import Trigger, subject_matches

ROOT = Path(__file__).resolve().parents[2]

DESIGN_EXAMPLE = """\
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {name: orders-to-billing, namespace: shop}
spec:
  source:
    kafka:      {bootstrapServers: [kafka:9092], topics: [orders], consumerGroup: billing, initialOffset: earliest}
    # nats:     {servers: [nats://nats:4222], subject: orders.>, jetstream: {stream: ORDERS, durable: billing}}
    # cron:     {schedule: "*/10 * * * * *", timeZone: Asia/Shanghai, data: {job: report}}
    # http:     {path: /hooks/github}
  event:        {type: com.example.order}          # defaults for raw (non-CloudEvents) payloads
  filter:       {attributes: {type: com.example.order.created}}
  function:     {name: billing, namespace: shop}   # or {url: http://...} where policy allows
  delivery:
    timeout: 30s
    concurrency: 64
    retry: {attempts: 5, backoff: exponential, delay: 200ms, maxDelay: 30s}
    deadLetter: {kafka: {topic: orders.dlq}}       # or {nats: {subject: ...}} or {url: ...}
    reply: {kafka: {topic: orders.replies}}
  scaling: {lagThreshold: 100, activationLagThreshold: 0, minReplicas: 0, maxReplicas: 50}
status: {conditions: [], lag: 0, desiredReplicas: 0, observedGeneration: 1}
"""


def trigger_yaml(name: str = "t", namespace: str = "default", spec: str | None = None) -> str:
    """A minimal valid Trigger; `spec` replaces the whole spec block (indented two spaces)."""
    body = spec if spec is not None else "source: {kafka: {topics: [orders]}}\nfunction: {name: f}\n"
    return (
        "apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\n"
        f"metadata: {{name: {name}, namespace: {namespace}}}\n"
        "spec:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    )


def problems_of(text: str, filename: str = "triggers.yaml") -> list[str]:
    with pytest.raises(TriggerSpecError) as info:
        parse_triggers(text, filename)
    return [str(p) for p in info.value.problems]


def spec_problems(spec: str) -> list[str]:
    return problems_of(trigger_yaml(spec=spec))


# --- valid input ---------------------------------------------------------------------------------


def test_design_example_loads_with_its_values() -> None:
    [t] = parse_triggers(DESIGN_EXAMPLE, "design.yaml")
    assert t.key == "shop/orders-to-billing"
    assert t.spec.source.kind == "kafka"
    kafka = t.spec.source.kafka
    assert kafka is not None
    assert kafka.bootstrap_servers == ["kafka:9092"]
    assert kafka.topics == ["orders"]
    assert kafka.group_for(t.key) == "billing"
    assert kafka.initial_offset == "earliest"
    assert t.spec.event.type == "com.example.order"
    assert t.spec.filter.attributes == {"type": "com.example.order.created"}
    assert (t.spec.function.name, t.spec.function.namespace) == ("billing", "shop")
    d = t.spec.delivery
    assert (d.timeout, d.concurrency) == (30.0, 64)
    r = d.retry
    assert (r.attempts, r.backoff, r.delay, r.max_delay) == (5, "exponential", 0.2, 30.0)
    assert d.dead_letter is not None and d.dead_letter.kafka is not None
    assert d.dead_letter.kafka.topic == "orders.dlq"
    assert d.reply is not None and d.reply.kafka is not None and d.reply.kafka.topic == "orders.replies"
    s = t.spec.scaling
    assert (s.lag_threshold, s.activation_lag_threshold, s.min_replicas, s.max_replicas) == (100, 0, 0, 50)


def test_defaults() -> None:
    [t] = parse_triggers(trigger_yaml(name="orders", namespace="shop"), "t.yaml")
    kafka = t.spec.source.kafka
    assert kafka is not None
    assert kafka.consumer_group is None
    assert kafka.group_for(t.key) == "eventbus-shop-orders"
    assert kafka.bootstrap_servers == []
    assert (kafka.initial_offset, kafka.ordering) == ("earliest", "partition")
    d = t.spec.delivery
    assert (d.timeout, d.concurrency, d.mode) == (30.0, 64, "binary")
    r = d.retry
    assert (r.attempts, r.backoff, r.delay, r.max_delay) == (3, "exponential", 0.2, 30.0)
    assert d.dead_letter is None and d.reply is None
    assert t.spec.scaling.lag_threshold == 10 and t.spec.scaling.max_replicas == 50
    assert t.spec.filter.attributes == {}
    assert t.spec.event.type is None


def test_namespace_defaults_to_default() -> None:
    text = trigger_yaml().replace("metadata: {name: t, namespace: default}", "metadata: {name: t}")
    [t] = parse_triggers(text, "t.yaml")
    assert t.key == "default/t"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("200ms", 0.2), ("30s", 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("1.5s", 1.5), ("0", 0.0)],
)
def test_durations(text: str, seconds: float) -> None:
    retry = f"{{delay: '{text}', maxDelay: 10h}}"
    spec = f"source: {{kafka: {{topics: [o]}}}}\nfunction: {{name: f}}\ndelivery: {{retry: {retry}}}\n"
    [t] = parse_triggers(trigger_yaml(spec=spec), "t.yaml")
    assert t.spec.delivery.retry.delay == pytest.approx(seconds)


def test_unset_secret_env_var_is_not_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTBUS_TEST_NO_SUCH_SECRET", raising=False)
    spec = """\
        source:
          kafka:
            topics: [o]
            sasl: {mechanism: PLAIN, username: u, passwordFrom: {env: EVENTBUS_TEST_NO_SUCH_SECRET}}
        function: {name: f}
        """
    [t] = parse_triggers(trigger_yaml(spec=spec), "t.yaml")
    assert t.spec.source.kafka is not None and t.spec.source.kafka.sasl is not None
    assert t.spec.source.kafka.sasl.password_from.env == "EVENTBUS_TEST_NO_SUCH_SECRET"


def test_each_source_kind() -> None:
    sources = {
        "nats": "nats: {servers: [nats://n:4222], subject: o.>, jetstream: {stream: ORDERS, durable: b}}",
        "cron": "cron: {schedule: '*/10 * * * * *', timeZone: Asia/Shanghai, data: {job: report}}",
        "http": "http: {path: /hooks/github}",
    }
    for kind, source in sources.items():
        [t] = parse_triggers(trigger_yaml(spec=f"source: {{{source}}}\nfunction: {{name: f}}\n"), "t.yaml")
        assert t.spec.source.kind == kind
    [cron] = parse_triggers(trigger_yaml(spec=f"source: {{{sources['cron']}}}\nfunction: {{name: f}}\n"), "t")
    assert cron.spec.source.cron is not None and cron.spec.source.cron.data == {"job": "report"}


def test_kubernetes_list_and_status_are_accepted() -> None:
    items = "".join(
        "\n" + textwrap.indent(trigger_yaml(name=n) + "status: {lag: 3}\n", "  ").replace("  ", "- ", 1)
        for n in ("a", "b")
    )
    text = "apiVersion: v1\nkind: List\nitems:" + items
    assert [t.key for t in parse_triggers(text, "list.yaml")] == ["default/a", "default/b"]
    assert parse_triggers("apiVersion: v1\nkind: TriggerList\nitems: []\n", "list.yaml") == []


def test_empty_documents_are_skipped_but_keep_their_number() -> None:
    text = "---\n# only a comment\n---\n" + trigger_yaml(name="a") + "---\n---\n" + trigger_yaml(name="b!")
    assert problems_of(text) == [
        "triggers.yaml#4 metadata.name: must be a lowercase DNS name: letters, digits, '-' and '.', "
        "starting and ending alphanumeric, got 'b!'"
    ]
    assert parse_triggers("", "empty.yaml") == []
    assert parse_triggers("---\n---\n", "empty.yaml") == []


# --- problems: messages ------------------------------------------------------------------------


def test_zero_attempts() -> None:
    spec = "source: {kafka: {topics: [o]}}\nfunction: {name: f}\ndelivery: {retry: {attempts: 0}}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.delivery.retry.attempts: must be >= 1"]


@pytest.mark.parametrize(("field", "value", "message"), [
    ("timeout", "100000000000000000000000d",
     "invalid duration '100000000000000000000000d': out of range (at most 2562047h, about 292 years)"),
    ("timeout", "\u0663s", "invalid duration '\u0663s': '\u0663' is not an ASCII digit (write 0-9)"),
    ("timeout", "61m", "must be <= 1h"),
    ("timeout", "0s", "must be > 0s"),
    ("retry", "{delay: 25h, maxDelay: 26h}", None),
])
def test_duration_bounds(field: str, value: str, message: str | None) -> None:
    spec = f"source: {{kafka: {{topics: [o]}}}}\nfunction: {{name: f}}\ndelivery: {{{field}: {value}}}\n"
    problems = spec_problems(spec)
    if message is None:
        assert problems == ["triggers.yaml#1 spec.delivery.retry.delay: must be <= 24h",
                            "triggers.yaml#1 spec.delivery.retry.maxDelay: must be <= 24h"]
    else:
        assert problems == [f"triggers.yaml#1 spec.delivery.{field}: {message}"]


def test_cron_lease_is_at_most_an_hour() -> None:
    spec = "source: {cron: {schedule: '@hourly', leaseDuration: 2h}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.source.cron.leaseDuration: must be <= 1h"]


def test_timezone_is_a_deprecated_alias_of_time_zone(caplog: pytest.LogCaptureFixture) -> None:
    new = parse_triggers(trigger_yaml(spec="source: {cron: {schedule: '@hourly', timeZone: Asia/Shanghai}}\n"
                              "function: {name: f}\n"), "t.yaml")
    assert not caplog.records
    old = parse_triggers(trigger_yaml(spec="source: {cron: {schedule: '@hourly', timezone: Asia/Shanghai}}\n"
                              "function: {name: f}\n"), "t.yaml")
    assert new == old and new[0].spec.source.cron is not None
    assert new[0].spec.source.cron.timezone == "Asia/Shanghai"
    assert [r.getMessage() for r in caplog.records] == [
        "t.yaml#1 spec.source.cron.timezone: deprecated, write timeZone (as in a Kubernetes CronJob)"]
    both = "source: {cron: {schedule: '@hourly', timeZone: UTC, timezone: UTC}}\nfunction: {name: f}\n"
    assert spec_problems(both) == [
        "triggers.yaml#1 spec.source.cron: set timeZone only (timezone is its deprecated spelling)"]


def test_required_field() -> None:
    assert spec_problems("source: {kafka: {topics: [o]}}\n") == ["triggers.yaml#1 spec.function: required"]
    assert spec_problems("source: {kafka: {}}\nfunction: {name: f}\n") == [
        "triggers.yaml#1 spec.source.kafka.topics: required"
    ]


def test_unknown_field_suggests_the_alias() -> None:
    spec = "source: {kafka: {topics: [o]}}\nfunction: {name: f}\ndelivery: {deadLeter: {url: http://x}}\n"
    assert spec_problems(spec) == [
        "triggers.yaml#1 spec.delivery.deadLeter: unknown field (did you mean 'deadLetter'?)"
    ]


def test_snake_case_is_an_unknown_field() -> None:
    spec = "source: {kafka: {topics: [o], consumer_group: g}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == [
        "triggers.yaml#1 spec.source.kafka.consumer_group: unknown field (did you mean 'consumerGroup'?)"
    ]


def test_unknown_field_without_a_close_match() -> None:
    spec = "source: {kafka: {topics: [o]}}\nfunction: {name: f}\nzzzzzz: 1\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.zzzzzz: unknown field"]


def test_unknown_top_level_field() -> None:
    text = trigger_yaml() + "stauts: {}\n"
    assert problems_of(text) == ["triggers.yaml#1 stauts: unknown field (did you mean 'status'?)"]


def test_enum() -> None:
    spec = "source: {kafka: {topics: [o], initialOffset: newest}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == [
        "triggers.yaml#1 spec.source.kafka.initialOffset: must be one of: earliest, latest"
    ]


def test_api_version() -> None:
    text = trigger_yaml().replace("eventbus.dev/v1alpha1", "eventbus.dev/v1")
    assert problems_of(text) == ["triggers.yaml#1 apiVersion: must be eventbus.dev/v1alpha1"]


def test_list_element_path() -> None:
    spec = "source: {kafka: {topics: [orders, '']}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.source.kafka.topics[1]: must not be empty"]
    spec = "source: {kafka: {topics: [on]}}\nfunction: {name: f}\n"  # YAML 1.1: `on` is true
    assert spec_problems(spec) == ["triggers.yaml#1 spec.source.kafka.topics[0]: must be a string, got true"]
    spec = "source: {kafka: {topics: []}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.source.kafka.topics: must not be empty"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'30'", "invalid duration '30': use a number and a unit, like 200ms, 30s, 5m or 1h30m"),
        ("30", "a duration needs a unit: write 30s or 30ms"),
        ("-1s", "invalid duration '-1s': use a number and a unit, like 200ms, 30s, 5m or 1h30m"),
        ("0s", "must be > 0s"),
        ("true", "a duration is a string like 30s, not a boolean"),
    ],
)
def test_duration_problems(value: str, message: str) -> None:
    spec = f"source: {{kafka: {{topics: [o]}}}}\nfunction: {{name: f}}\ndelivery: {{timeout: {value}}}\n"
    assert spec_problems(spec) == [f"triggers.yaml#1 spec.delivery.timeout: {message}"]


def test_exactly_one_source() -> None:
    spec = "source: {kafka: {topics: [o]}, nats: {subject: s}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == [
        "triggers.yaml#1 spec.source: exactly one of kafka, nats, cron, http must be set (found: kafka, nats)"
    ]
    assert spec_problems("source: {}\nfunction: {name: f}\n") == [
        "triggers.yaml#1 spec.source: exactly one of kafka, nats, cron, http must be set (found: none)"
    ]


def test_exactly_one_sink() -> None:
    spec = (
        "source: {kafka: {topics: [o]}}\nfunction: {name: f}\n"
        "delivery: {deadLetter: {kafka: {topic: dlq}, url: 'http://x'}, reply: {}}\n"
    )
    assert spec_problems(spec) == [
        "triggers.yaml#1 spec.delivery.deadLetter: exactly one of kafka, nats, url must be set",
        "triggers.yaml#1 spec.delivery.reply: exactly one of kafka, nats, url must be set",
    ]


def test_function_name_or_url() -> None:
    spec = "source: {kafka: {topics: [o]}}\nfunction: {name: f, url: 'http://x'}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.function: set exactly one of name or url"]
    spec = "source: {kafka: {topics: [o]}}\nfunction: {url: 'ftp://x'}\n"
    assert spec_problems(spec) == [
        "triggers.yaml#1 spec.function.url: must start with http:// or https://, got 'ftp://x'"
    ]


def test_model_rules() -> None:
    cases = {
        "scaling: {minReplicas: 3, maxReplicas: 2}": "spec.scaling: minReplicas must be <= maxReplicas",
        "delivery: {retry: {delay: 1m, maxDelay: 10s}}": "spec.delivery.retry: delay must be <= maxDelay",
        "delivery: {concurrency: 0}": "spec.delivery.concurrency: must be >= 1",
        "delivery: {concurrency: 10001}": "spec.delivery.concurrency: must be <= 10000",
        "delivery: {concurrency: many}": "spec.delivery.concurrency: must be an integer, got 'many'",
        "filter: {attributes: {Type: x}}": (
            "spec.filter: invalid CloudEvents attribute name 'Type': use 1-20 lowercase letters and digits"
        ),
    }
    for extra, message in cases.items():
        spec = f"source: {{kafka: {{topics: [o]}}}}\nfunction: {{name: f}}\n{extra}\n"
        assert spec_problems(spec) == [f"triggers.yaml#1 {message}"], extra


def test_cron_problems() -> None:
    spec = "source: {cron: {schedule: '* * *', timeZone: Mars/Olympus}}\nfunction: {name: f}\n"
    [problem] = spec_problems(spec)
    assert problem.startswith("triggers.yaml#1 spec.source.cron: invalid schedule '* * *'")


def test_http_topic_needs_async() -> None:
    spec = "source: {http: {path: /h, topic: {kafka: {topic: t}}}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.source.http: topic is only used with mode: async"]
    spec = "source: {http: {path: h}}\nfunction: {name: f}\n"
    assert spec_problems(spec) == ["triggers.yaml#1 spec.source.http.path: must start with /, got 'h'"]


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = trigger_yaml(name="a") + "---\n" + "apiVersion: [eventbus\nkind: Trigger\n"
    assert problems_of(text) == [
        "triggers.yaml#2: invalid YAML at line 9, column 5: expected ',' or ']', but got ':'"
    ]
    assert problems_of("a: b: c\n") == ["triggers.yaml#1: invalid YAML at line 1, column 5: "
                                        "mapping values are not allowed here"]


def test_duplicate_yaml_key() -> None:
    text = trigger_yaml() + "spec: {}\n"
    problems = problems_of(text)
    assert problems[0] == "triggers.yaml#1: duplicate key 'spec' at line 7, column 1"


def test_other_kinds_are_errors() -> None:
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
    assert problems_of(text) == ["triggers.yaml#1 kind: must be Trigger or List, got 'Deployment'"]
    assert problems_of("apiVersion: eventbus.dev/v1alpha1\n") == ["triggers.yaml#1 kind: required"]
    assert problems_of("- a\n- b\n") == [
        "triggers.yaml#1: must be a mapping (a Trigger resource), got a list"
    ]
    text = "kind: List\nitems:\n- {kind: ConfigMap}\n- 3\n"
    assert problems_of(text) == [
        "triggers.yaml#1 items[0].kind: must be Trigger, got 'ConfigMap'",
        "triggers.yaml#1 items[1]: must be a mapping (a Trigger resource), got int 3",
    ]


def test_all_problems_across_documents_are_collected_and_numbered() -> None:
    bad_attempts = "source: {kafka: {topics: [o]}}\nfunction: {name: f}\ndelivery: {retry: {attempts: -2}}\n"
    text = "---\n".join(
        [
            trigger_yaml(name="ok"),
            trigger_yaml(name="two", spec=bad_attempts),
            "kind: Service\n",
            trigger_yaml(name="four", spec="source: {kafka: {topics: [o], initialOffset: x}}\n"),
        ]
    )
    assert problems_of(text) == [
        "triggers.yaml#2 spec.delivery.retry.attempts: must be >= 1",
        "triggers.yaml#3 kind: must be Trigger or List, got 'Service'",
        "triggers.yaml#4 spec.source.kafka.initialOffset: must be one of: earliest, latest",
        "triggers.yaml#4 spec.function: required",
    ]


def test_list_item_problems_are_prefixed() -> None:
    item = textwrap.indent(trigger_yaml(spec="source: {kafka: {topics: [o]}}\n"), "  ").replace("  ", "- ", 1)
    assert problems_of("apiVersion: v1\nkind: List\nitems:\n" + item) == [
        "triggers.yaml#1 items[0].spec.function: required"
    ]


def test_duplicate_names_in_one_text() -> None:
    text = "---\n".join([trigger_yaml(name="a"), trigger_yaml(name="a"), trigger_yaml("a", namespace="x")])
    assert problems_of(text) == [
        "triggers.yaml#2 metadata.name: duplicate trigger default/a (first defined at triggers.yaml#1)"
    ]


def test_error_type() -> None:
    with pytest.raises(TriggerSpecError) as info:
        parse_triggers("kind: Foo\n---\nkind: Bar\n", "x.yaml")
    err = info.value
    assert isinstance(err, SchemaError) and isinstance(err, ValueError)
    assert str(err) == (
        "2 problems in trigger specs:\n"
        "  x.yaml#1 kind: must be Trigger or List, got 'Foo'\n"
        "  x.yaml#2 kind: must be Trigger or List, got 'Bar'"
    )
    assert err.problems[0] == SpecProblem("x.yaml", 1, "kind", "must be Trigger or List, got 'Foo'")
    copy = pickle.loads(pickle.dumps(err))
    assert copy.problems == err.problems and str(copy) == str(err)


# --- files and folders ---------------------------------------------------------------------------


def test_folder_loading_is_sorted_recursive_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(trigger_yaml(name="b"))
    (tmp_path / "a.yml").write_text(trigger_yaml(name="a1") + "---\n" + trigger_yaml(name="a2"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text(trigger_yaml(name="c"))
    (tmp_path / "notes.txt").write_text("not yaml: [")
    (tmp_path / "..data").mkdir()  # a mounted ConfigMap's hidden copy
    (tmp_path / "..data" / "b.yaml").write_text(trigger_yaml(name="b"))
    (tmp_path / ".hidden.yaml").write_text("kind: Nope\n")
    triggers = load_triggers(tmp_path)
    assert [t.metadata.name for t in triggers] == ["a1", "a2", "b", "c"]
    assert all(isinstance(t, Trigger) for t in triggers)
    assert [t.metadata.name for t in load_triggers(str(tmp_path / "b.yaml"))] == ["b"]


def test_folder_problems_name_their_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(trigger_yaml(name="x"))
    (tmp_path / "b.yaml").write_text(
        trigger_yaml(name="y") + "---\n" + trigger_yaml(name="x") + "---\n" + "kind: Pod\n"
    )
    (tmp_path / "c.yaml").write_text("a: [\n")
    with pytest.raises(TriggerSpecError) as info:
        load_triggers(tmp_path)
    a, b, c = (str(tmp_path / n) for n in ("a.yaml", "b.yaml", "c.yaml"))
    assert [str(p) for p in info.value.problems] == [
        f"{b}#3 kind: must be Trigger or List, got 'Pod'",
        f"{c}#1: invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
        f"{b}#2 metadata.name: duplicate trigger default/x (first defined at {a}#1)",
    ]


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(TriggerSpecError) as info:
        load_triggers(tmp_path / "nope")
    assert [str(p) for p in info.value.problems] == [f"{tmp_path / 'nope'}: no such file or directory"]
    assert load_triggers(tmp_path) == []


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"kind: \xff\n")
    with pytest.raises(TriggerSpecError) as info:
        load_triggers(tmp_path)
    assert [str(p) for p in info.value.problems] == [f"{tmp_path / 'bad.yaml'}: not UTF-8 text (byte 6)"]


def test_example_manifests_load() -> None:
    triggers = load_triggers(ROOT / "manifests" / "examples")
    assert {t.spec.source.kind for t in triggers} == {"kafka", "nats", "cron", "http"}
    nats = next(t for t in triggers if t.spec.source.nats is not None).spec.source.nats
    assert nats is not None and nats.jetstream is not None


def _loop_doc(source: str, sink: str) -> str:
    return f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: loop}}
spec:
  source: {source}
  function: {{name: f}}
  delivery: {{deadLetter: {sink}}}
"""


def test_dead_letter_topic_that_is_a_source_topic_is_rejected() -> None:
    with pytest.raises(TriggerSpecError) as err:
        parse_triggers(_loop_doc("{kafka: {topics: [a, orders]}}", "{kafka: {topic: orders}}"), "t.yaml")
    assert "delivery.deadLetter: topic 'orders' is also a source topic" in str(err.value)


def test_dead_letter_subject_covered_by_the_source_subject_is_rejected() -> None:
    with pytest.raises(TriggerSpecError) as err:
        parse_triggers(_loop_doc("{nats: {subject: 'orders.>'}}", "{nats: {subject: orders.dlq}}"), "t.yaml")
    assert "subject 'orders.dlq' is covered by the source subject 'orders.>'" in str(err.value)


def test_dead_letter_elsewhere_is_fine() -> None:
    parse_triggers(_loop_doc("{nats: {subject: 'orders.*'}}", "{nats: {subject: orders.dlq.x}}"), "t.yaml")
    parse_triggers(_loop_doc("{kafka: {topics: [orders]}}", "{kafka: {topic: orders.dlq}}"), "t.yaml")


@pytest.mark.parametrize("pattern,subject,match", [
    ("a.>", "a.b", True), ("a.>", "a.b.c", True), ("a.>", "a", False), ("a.*", "a.b", True),
    ("a.*", "a.b.c", False), ("a.b", "a.b", True), ("a.b", "a.c", False), (">", "x", True), ("*.b", "a.b", True),
])
def test_subject_matching(pattern: str, subject: str, match: bool) -> None:
    assert subject_matches(pattern, subject) is match
