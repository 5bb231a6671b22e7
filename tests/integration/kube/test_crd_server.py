"""The Trigger CRD on a real kube-apiserver: Established, and invalid Triggers rejected naming the field."""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from connectors.kube import KubeApiError, KubeClient
from tests.integration.kube.support import create_trigger

pytestmark = pytest.mark.integration

VALID: dict[str, Any] = {
    "apiVersion": "eventbus.dev/v1alpha1",
    "kind": "Trigger",
    "metadata": {"name": "orders"},
    "spec": {
        "source": {"kafka": {"topics": ["orders"]}},
        "function": {"name": "billing"},
        "delivery": {"retry": {"attempts": 3}, "deadLetter": {"kafka": {"topic": "orders.dlq"}}},
    },
}


def variant(name: str, **changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(VALID)
    doc["metadata"]["name"] = name
    for path, value in changes.items():
        node = doc["spec"]
        *parents, last = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return doc


async def rejected(kube: KubeClient, namespace: str, doc: dict[str, Any]) -> KubeApiError:
    with pytest.raises(KubeApiError) as info:
        await create_trigger(kube, namespace, doc)
    return info.value


async def test_crd_is_established(kube: KubeClient) -> None:
    crd = await kube._call(kube.api_extensions.read_custom_resource_definition, "triggers.eventbus.dev")
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert "NonStructuralSchema" not in conditions


async def test_valid_trigger_is_accepted(kube: KubeClient, namespace: str) -> None:
    created = await create_trigger(kube, namespace, variant("ok"))
    assert created["metadata"]["generation"] == 1


@pytest.mark.parametrize(("name", "changes", "status", "field", "message"), [
    ("two-sources", {"source": {"kafka": {"topics": ["a"]}, "cron": {"schedule": "* * * * *"}}}, 422,
     "spec.source", "exactly one of kafka, nats, cron, http"),
    ("no-source", {"source": {}}, 422, "spec.source", "exactly one of kafka, nats, cron, http"),
    ("bad-duration", {"delivery__timeout": "30"}, 422, "spec.delivery.timeout", "should match"),
    ("negative-attempts", {"delivery__retry__attempts": -1}, 422, "spec.delivery.retry.attempts",
     "greater than or equal to 1"),
    ("min-over-max", {"scaling": {"minReplicas": 5, "maxReplicas": 2}}, 422, "spec.scaling.minReplicas",
     "minReplicas must be <= maxReplicas"),
    ("dlq-loop", {"delivery__deadLetter": {"kafka": {"topic": "orders"}}}, 422,
     "spec.delivery.deadLetter.kafka.topic", "is also a source topic"),
    ("two-functions", {"function": {"name": "a", "url": "http://x"}}, 422, "spec.function", "exactly one of name, url"),
    ("unknown-field", {"source": {"kafka": {"topics": ["a"], "bogus": 1}}}, 400, "spec.source.kafka.bogus",
     "unknown field"),
])
async def test_invalid_triggers_are_rejected_naming_the_field(
    kube: KubeClient, namespace: str, name: str, changes: dict[str, Any], status: int, field: str, message: str
) -> None:
    err = await rejected(kube, namespace, variant(name, **changes))
    assert err.status == status, err
    assert field in err.message and message in err.message, err.message


def test_kubectl_dry_run_shows_the_cel_message(kubectl: list[str], crd: str) -> None:
    doc = variant("kubectl-two", source={"kafka": {"topics": ["a"]}, "http": {"path": "/x"}})
    doc["metadata"]["namespace"] = "default"
    out = subprocess.run([*kubectl, "create", "--dry-run=server", "-f", "-"], input=json.dumps(doc),
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "spec.source: Invalid value: exactly one of kafka, nats, cron, http" in out.stderr, out.stderr
