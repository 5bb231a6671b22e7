"""The `triggers.eventbus.dev` CustomResourceDefinition, its schema generated from the pydantic models.

`python -m schemas.crd` prints it; `manifests/crd/triggers.eventbus.dev.yaml` is that output, and a
unit test fails when the two drift apart.

The models' JSON schema (`Trigger.model_json_schema(by_alias=True)`) is made *structural*, as
`apiextensions.k8s.io/v1` demands: `$ref`s inlined, `anyOf: [X, null]` collapsed to `X` plus
`nullable: true`, `const` turned into a one-value `enum`, a schema-less value (`Any`, the cron `data`)
marked `x-kubernetes-preserve-unknown-fields`, and the keywords Kubernetes rejects or would act on
dropped: `title`, `additionalProperties: false` (unknown fields are pruned, and rejected by kubectl's
strict field validation) and every `default` (defaults live in the models alone, so a local file and a
custom resource mean the same thing, and stored objects do not freeze today's defaults).

Rules across fields become `x-kubernetes-validations` (CEL) with a message, so the API server names the
field: "exactly one of" (`exactly one of kafka, nats, cron, http` on `spec.source`), `minReplicas <=
maxReplicas` on whatever model holds both, and no dead-letter/reply sink on a source topic. Rules that
need code (cron syntax, time zones, ...) are checked when the controller loads the resource and reported
in its status (`Ready=False, reason=InvalidSpec`).
"""

from __future__ import annotations

from typing import Any, get_args

import yaml
from pydantic import BaseModel

from schemas.trigger import API_VERSION, KIND, FunctionRef, HttpTopic, SecretRef, Sink, Source, Trigger

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "triggers"
CRD_NAME = f"{PLURAL}.{GROUP}"
MANIFEST_PATH = f"manifests/crd/{CRD_NAME}.yaml"

_EXACTLY_ONE: dict[type[BaseModel], tuple[str, ...]] = {
    Source: ("kafka", "nats", "cron", "http"),
    Sink: ("kafka", "nats", "url"),
    FunctionRef: ("name", "url"),
    HttpTopic: ("kafka", "nats"),
    SecretRef: ("env", "secretKeyRef"),
}

_MODELS: dict[str, type[BaseModel]] = {}
"""Model classes by JSON-schema name (filled from the Trigger model tree on first use)."""

_DROPPED = frozenset({"title", "default", "$defs", "examples"})

_KEY_ORDER = (
    "description", "type", "format", "nullable", "enum", "pattern", "minLength", "maxLength",
    "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "minItems", "maxItems", "items",
    "required", "properties", "additionalProperties", "oneOf", "x-kubernetes-validations",
)

_CONDITION = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string", "description": "Ready, or another condition the controller reports."},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "format": "int64"},
    },
}

STATUS_SCHEMA: dict[str, Any] = {
    "description": "Written by the eventbus controller; fields it adds later are kept.",
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "observedGeneration": {"type": "integer", "format": "int64"},
        "function": {
            "type": "string",
            "description": "Where events go: the function's name (namespace/name) or URL.",
        },
        "source": {
            "type": "string",
            "description": "What the trigger consumes, e.g. kafka:orders (Source.summary).",
        },
        "lag": {
            "type": "integer",
            "format": "int64",
            "description": "Events waiting (Kafka lag, JetStream pending + ack-pending, HTTP in flight).",
        },
        "desiredReplicas": {"type": "integer", "format": "int32"},
        "active": {"type": "boolean", "description": "Lag exceeds activationLagThreshold."},
        "lastScheduleTime": {"type": "string", "format": "date-time", "nullable": True},
        "partitions": {
            "type": "array",
            "description": "Per-partition progress of a Kafka source.",
            "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "topic": {"type": "string"},
                    "partition": {"type": "integer", "format": "int32"},
                    "committed": {"type": "integer", "format": "int64"},
                    "end": {"type": "integer", "format": "int64"},
                    "lag": {"type": "integer", "format": "int64"},
                },
            },
        },
        "conditions": {
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
            "items": _CONDITION,
        },
    },
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Source", "type": "string", "jsonPath": ".status.source"},
    {"name": "Function", "type": "string", "jsonPath": ".status.function"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Lag", "type": "integer", "jsonPath": ".status.lag"},
    {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
    {"name": "Reason", "type": "string", "priority": 1,
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
"""`kubectl get trg`: every column but Age reads a `status` field the controller writes."""

def _exactly_one_rule(fields: tuple[str, ...]) -> dict[str, str]:
    has = ", ".join(f"has(self.{f})" for f in fields)
    return {"rule": f"[{has}].filter(x, x).size() == 1", "message": f"exactly one of {', '.join(fields)}"}


def _bounds_rule(model: type[BaseModel]) -> dict[str, str] | None:
    """`minReplicas <= maxReplicas` for a model with both fields, unset ones at the model's default."""
    fields = model.model_fields
    if "min_replicas" not in fields or "max_replicas" not in fields:
        return None
    lo, hi = fields["min_replicas"].get_default(), fields["max_replicas"].get_default()
    return {
        "rule": f"(has(self.minReplicas) ? self.minReplicas : {lo}) <= "
                f"(has(self.maxReplicas) ? self.maxReplicas : {hi})",
        "message": "minReplicas must be <= maxReplicas",
        "fieldPath": ".minReplicas",
    }


def _sink_loop_rules() -> list[dict[str, str]]:
    """A dead-letter or reply sink on one of the trigger's own source topics/subjects (see TriggerSpec)."""
    out = []
    for which in ("deadLetter", "reply"):
        sink = f"self.delivery.{which}"
        guard = f"!has(self.delivery) || !has({sink})"
        out.append({
            "rule": f"{guard} || !has({sink}.kafka) || !has(self.source.kafka) || "
                    f"!({sink}.kafka.topic in self.source.kafka.topics)",
            "message": f"delivery.{which}.kafka.topic is also a source topic (events would loop back)",
            "fieldPath": f".delivery.{which}.kafka.topic",
        })
        out.append({
            "rule": f"{guard} || !has({sink}.nats) || !has(self.source.nats) || "
                    f"{sink}.nats.subject != self.source.nats.subject",
            "message": f"delivery.{which}.nats.subject is the source subject (events would loop back)",
            "fieldPath": f".delivery.{which}.nats.subject",
        })
    return out


def trigger_schema() -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a Trigger custom resource (`openAPIV3Schema`)."""
    raw = Trigger.model_json_schema(by_alias=True)
    _collect_models(Trigger)
    defs: dict[str, Any] = raw.get("$defs", {})
    one_of = {cls.__name__: fields for cls, fields in _EXACTLY_ONE.items()}
    spec = _structural(raw["properties"]["spec"], defs, one_of, ())
    spec["x-kubernetes-validations"] = _sink_loop_rules()
    return {
        "description": "A Trigger subscribes to one source (Kafka, NATS, cron or HTTP) and delivers "
        "its events as CloudEvents to a function.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": _order_schema(STATUS_SCHEMA),
        },
    }


def trigger_crd() -> dict[str, Any]:
    """The `apiextensions.k8s.io/v1` CustomResourceDefinition `triggers.eventbus.dev`."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "eventbus", "app.kubernetes.io/part-of": "eventbus"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["trg"],
                "categories": ["eventbus"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": trigger_schema()},
                }
            ],
        },
    }


def render_crd() -> str:
    """The CRD as the YAML text of `manifests/crd/triggers.eventbus.dev.yaml`."""
    head = f"# Generated by `python -m schemas.crd > {MANIFEST_PATH}`: do not edit.\n"
    body = yaml.dump(trigger_crd(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return head + body


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a schema used twice is written out twice, never as an `&id001` anchor."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _structural(
    node: dict[str, Any], defs: dict[str, Any], one_of: dict[str, tuple[str, ...]], stack: tuple[str, ...]
) -> dict[str, Any]:
    """One JSON-schema node, made structural (see the module doc)."""
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in stack:
            raise ValueError(f"recursive model {name} cannot be inlined into a CRD schema")
        target = _structural(defs[name], defs, one_of, (*stack, name))
        rules = [_exactly_one_rule(one_of[name])] if name in one_of else []
        model = _MODELS.get(name)
        bounds = _bounds_rule(model) if model is not None else None
        if bounds is not None:
            rules.append(bounds)
        if rules:
            target["x-kubernetes-validations"] = rules
        return _ordered({**target, **_siblings(node)})
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _structural({**inner, **node}, defs, one_of, stack)
    if "anyOf" in node:
        branches = node.pop("anyOf")
        others = [b for b in branches if b != {"type": "null"}]
        if len(others) != 1:
            raise ValueError(f"a union of {len(others)} schemas has no structural form: {branches}")
        merged = _structural(others[0], defs, one_of, stack)
        merged.update(_siblings(node))
        if len(others) < len(branches):
            merged["nullable"] = True
        return _ordered(merged)

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key == "properties":
            out[key] = {k: _structural(v, defs, one_of, stack) for k, v in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs, one_of, stack)
        elif key == "additionalProperties":
            if value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _structural(value, defs, one_of, stack)
            # False: dropped (structural schemas forbid it beside properties; unknown fields are pruned)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if "type" not in out and "enum" not in out:
        if "properties" in out or "additionalProperties" in out:
            out["type"] = "object"
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True  # Any: whatever the user writes
    return _ordered(out)


def _collect_models(model: type[BaseModel]) -> None:
    """Every model class reachable from `model`'s fields, by name (the `$defs` keys)."""
    if model.__name__ in _MODELS:
        return
    _MODELS[model.__name__] = model
    for info in model.model_fields.values():
        for cls in _model_classes(info.annotation):
            _collect_models(cls)


def _model_classes(tp: Any) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [c for arg in get_args(tp) for c in _model_classes(arg)]


def _siblings(node: dict[str, Any]) -> dict[str, Any]:
    """Keywords beside a `$ref` or `anyOf` (a field's description): kept, except the dropped ones."""
    extra = {k: v for k, v in node.items() if k not in _DROPPED}
    if any(k in extra for k in ("type", "properties", "items", "anyOf", "$ref")):
        raise ValueError(f"unexpected keywords beside a $ref or anyOf: {sorted(extra)}")
    return extra


def _order_schema(node: dict[str, Any]) -> dict[str, Any]:
    """`_ordered` all the way down (for the hand-written status schema)."""
    out = _ordered(node)
    if "properties" in out:
        out["properties"] = {k: _order_schema(v) for k, v in out["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _order_schema(out[key])
    return out


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {k: i for i, k in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


if __name__ == "__main__":
    print(render_crd(), end="")
