"""The generated CRD: equal to the committed manifest, structural, and accepting the example Triggers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.crd import MANIFEST_PATH, render_crd, trigger_crd, trigger_schema
from schemas.loader import load_triggers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "manifests" / "examples"

# Keywords a structural schema may use inside anyOf / oneOf / allOf / not ("value validations" only).
VALUE_VALIDATIONS = {
    "required", "enum", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "multipleOf", "minProperties",
    "maxProperties", "anyOf", "oneOf", "allOf", "not",
}
TYPES = {"object", "array", "string", "integer", "number", "boolean"}
LOGIC = ("anyOf", "oneOf", "allOf", "not")


def test_manifest_is_up_to_date() -> None:
    committed = (ROOT / MANIFEST_PATH).read_text(encoding="utf-8")
    assert committed == render_crd(), (
        f"{MANIFEST_PATH} is out of date with schemas/trigger.py: "
        f"run `python -m schemas.crd > {MANIFEST_PATH}` and commit the result"
    )


def test_manifest_parses_back_to_the_crd() -> None:
    text = render_crd()
    assert "&id" not in text and "*id" not in text, "no YAML anchors/aliases in the manifest"
    assert yaml.safe_load(text) == trigger_crd()


def test_crd_identity() -> None:
    crd = trigger_crd()
    assert (crd["apiVersion"], crd["kind"]) == ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "triggers.eventbus.dev"
    spec = crd["spec"]
    assert spec["group"] == "eventbus.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "Trigger" and spec["names"]["plural"] == "triggers"
    assert spec["names"]["shortNames"] == ["trg"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    columns = version["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == ["Source", "Function", "Ready", "Lag", "Desired", "Reason", "Age"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for c in columns:
        assert c["type"] in {"string", "integer", "number", "boolean", "date"}
        if c["name"] != "Age":  # every other column shows a status field the controller writes
            assert c["jsonPath"].startswith(".status."), c
            assert c["jsonPath"].split(".")[2].split("[")[0] in status, c
    expected = {"conditions", "lag", "desiredReplicas", "observedGeneration", "partitions", "source", "function"}
    expected.add("lastScheduleTime")
    assert expected <= set(status)


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node reached through properties, items and additionalProperties, with its path."""
    yield path or "<root>", schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


def all_dicts(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from all_dicts(v)
    elif isinstance(value, list):
        for v in value:
            yield from all_dicts(v)


def test_schema_is_structural() -> None:
    schema = trigger_schema()
    for d in all_dicts(schema):
        for banned in ("$ref", "$defs", "title", "default", "const", "discriminator"):
            assert banned not in d, f"{banned} in {d}"
    assert schema["type"] == "object"
    assert schema["properties"]["metadata"] == {"type": "object"}
    for path, node in nodes(schema):
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        assert node.get("type") in TYPES or preserve or node.get("x-kubernetes-int-or-string") is True, (
            f"{path}: no type"
        )
        if "nullable" in node:
            assert node["nullable"] is True and "type" in node, path
        if "additionalProperties" in node:
            assert isinstance(node["additionalProperties"], dict), f"{path}: bad additionalProperties"
            assert "properties" not in node, f"{path}: properties and additionalProperties together"
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{path}: required {name!r} is not a property"
        for key in LOGIC:
            branches = node.get(key)
            if branches is None:
                continue
            for branch in branches if isinstance(branches, list) else [branches]:
                assert set(branch) <= VALUE_VALIDATIONS, f"{path}: {key} may hold value validations only"
                for name in branch.get("required", []):
                    assert name in node.get("properties", {}), f"{path}: {key} requires unknown {name!r}"
        for pattern_node in all_dicts(node):
            if "pattern" in pattern_node:
                re.compile(pattern_node["pattern"])


def test_exactly_one_rules_are_in_the_schema() -> None:
    spec = trigger_schema()["properties"]["spec"]
    assert spec["properties"]["source"]["x-kubernetes-validations"] == [{
        "rule": "[has(self.kafka), has(self.nats), has(self.cron), has(self.http)].filter(x, x).size() == 1",
        "message": "exactly one of kafka, nats, cron, http",
    }]
    assert spec["properties"]["function"]["x-kubernetes-validations"][0]["message"] == "exactly one of name, url"
    [bounds] = spec["properties"]["scaling"]["x-kubernetes-validations"]
    assert bounds["message"] == "minReplicas must be <= maxReplicas"
    loops = [r["fieldPath"] for r in spec["x-kubernetes-validations"]]
    assert ".delivery.deadLetter.kafka.topic" in loops and ".delivery.reply.kafka.topic" in loops
    cron = spec["properties"]["source"]["properties"]["cron"]
    assert cron["properties"]["data"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert cron["nullable"] is True


# --- a small OpenAPI v3 (Kubernetes subset) validator, to check samples against the schema ------------


def violations(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    where = path or "<root>"
    if value is None:
        return [] if schema.get("nullable") or "type" not in schema else [f"{where}: null"]
    out: list[str] = []
    t = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if t is not None and not checks[t](value):
        return [f"{where}: not {t}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: not in enum")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            out.append(f"{where}: too short")
    if isinstance(value, int | float) and "minimum" in schema and value < schema["minimum"]:
        out.append(f"{where}: below minimum")
    if isinstance(value, int | float) and "maximum" in schema and value > schema["maximum"]:
        out.append(f"{where}: above maximum")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where}: too few items")
        for i, item in enumerate(value):
            out += violations(schema["items"], item, f"{path}[{i}]")
    if isinstance(value, dict) and t == "object":
        for name in schema.get("required", []):
            if name not in value:
                out.append(f"{where}: {name} required")
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                out += violations(props[k], v, f"{path}.{k}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += violations(schema["additionalProperties"], v, f"{path}.{k}")
        for rule in schema.get("x-kubernetes-validations", []):  # the "exactly one of" CEL rules only
            if rule["message"].startswith("exactly one of "):
                names = rule["message"].removeprefix("exactly one of ").split(", ")
                if sum(n in value for n in names) != 1:
                    out.append(f"{where}: {rule['message']}")
    return out


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for f in sorted(EXAMPLES.glob("*.yaml")):
        docs += [(f.name, d) for d in yaml.safe_load_all(f.read_text(encoding="utf-8")) if d]
    return docs


def test_examples_load_and_cover_every_source_kind() -> None:
    triggers = load_triggers(EXAMPLES)
    assert sorted(t.spec.source.kind for t in triggers) == ["cron", "http", "kafka", "nats"]


@pytest.mark.parametrize(("name", "doc"), example_documents(), ids=lambda x: x if isinstance(x, str) else "")
def test_examples_satisfy_the_crd_schema(name: str, doc: dict[str, Any]) -> None:
    assert violations(trigger_schema(), doc) == []


def test_schema_rejects_what_the_models_reject() -> None:
    [(_, doc)] = [d for d in example_documents() if d[0] == "kafka.yaml"]
    schema = trigger_schema()
    source = {**doc["spec"]["source"], "nats": {"subject": "s"}}
    two_sources = {**doc, "spec": {**doc["spec"], "source": source}}
    assert violations(schema, two_sources) == [".spec.source: exactly one of kafka, nats, cron, http"]
    bad_duration = {**doc, "spec": {**doc["spec"], "delivery": {"timeout": "30"}}}
    assert violations(schema, bad_duration) == [
        r".spec.delivery.timeout: does not match ^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d))+)$"
    ]


def test_other_manifests_are_valid_yaml() -> None:
    kinds = []
    for f in sorted((ROOT / "manifests").rglob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")):
            if doc:
                assert {"apiVersion", "kind"} <= set(doc), f.name
                kinds.append(doc["kind"])
    expected = ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
    expected.append("ScaledObject")
    assert set(expected) <= set(kinds)


def test_duration_bounds_are_in_the_schema() -> None:
    """The models' maxima travel to the API server as CEL rules (checked against a real kube-apiserver by
    hand: 61m, 1d, 1d1h refused for delivery.timeout, 0.01d accepted)."""
    spec = trigger_schema()["properties"]["spec"]["properties"]
    timeout = spec["delivery"]["properties"]["timeout"]
    delay = spec["delivery"]["properties"]["retry"]["properties"]["delay"]
    lease = spec["source"]["properties"]["cron"]["properties"]["leaseDuration"]
    assert [r["message"] for r in timeout["x-kubernetes-validations"]] == ["must be <= 1h", "must be > 0s"]
    assert [r["message"] for r in delay["x-kubernetes-validations"]] == ["must be <= 24h"]
    assert [r["message"] for r in lease["x-kubernetes-validations"]] == ["must be <= 1h", "must be > 0s"]
    assert timeout["maxLength"] == 64 and "[0-9]" in timeout["pattern"] and r"\d" not in timeout["pattern"]
    cron = spec["source"]["properties"]["cron"]["properties"]
    assert "timeZone" in cron and "timezone" not in cron
