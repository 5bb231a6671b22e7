"""`kubectl apply -k manifests` against the test API server, and the controller's RBAC: enough, and no more.

The API server runs with RBAC and knows the token of `system:serviceaccount:eventbus:eventbus`
(scripts/kube), so `kubectl auth can-i --as` answers from the manifests' ClusterRole.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.kube.conftest import REPO

pytestmark = pytest.mark.integration

SA = "system:serviceaccount:eventbus:eventbus"


def kubectl_run(kubectl: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def applied(kubectl: list[str], crd: str) -> str:
    """`kubectl apply -k manifests` for real: nothing schedules the Deployment's pods here (no scheduler or
    kubelet), which is fine; the namespace, CRD, RBAC, Deployment and Service are stored and RBAC is in force."""
    real = kubectl_run(kubectl, "apply", "-k", str(REPO / "manifests"), "--server-side", "--force-conflicts")
    assert real.returncode == 0, real.stderr
    return real.stdout


def test_apply_k_manifests(kubectl: list[str], applied: str) -> None:
    for kind in ("namespace/eventbus", "customresourcedefinition.apiextensions.k8s.io/triggers.eventbus.dev",
                 "serviceaccount/eventbus", "clusterrole.rbac.authorization.k8s.io/eventbus",
                 "clusterrolebinding.rbac.authorization.k8s.io/eventbus", "deployment.apps/eventbus",
                 "service/eventbus"):
        assert kind in applied, applied
    # and again as a server-side dry run (what CI can do against any cluster): every object still validates
    dry = kubectl_run(kubectl, "apply", "-k", str(REPO / "manifests"), "--server-side", "--force-conflicts",
                      "--dry-run=server")
    assert dry.returncode == 0, dry.stderr
    deployment = kubectl_run(kubectl, "get", "deployment", "eventbus", "-n", "eventbus", "-o",
                             "jsonpath={.spec.template.spec.containers[0].args}")
    assert "--kubernetes" in deployment.stdout, deployment.stdout


@pytest.mark.parametrize(("verb", "resource", "allowed"), [
    ("list", "triggers.eventbus.dev", True),
    ("watch", "triggers.eventbus.dev", True),
    ("get", "triggers.eventbus.dev", True),
    ("patch", "triggers.eventbus.dev/status", True),
    ("get", "secrets", True),
    ("create", "leases.coordination.k8s.io", True),
    ("update", "leases.coordination.k8s.io", True),
    ("create", "events.events.k8s.io", True),
    ("create", "triggers.eventbus.dev", False),
    ("patch", "triggers.eventbus.dev", False),
    ("delete", "triggers.eventbus.dev", False),
    ("list", "secrets", False),
    ("create", "secrets", False),
    ("delete", "leases.coordination.k8s.io", False),
    ("create", "deployments.apps", False),
    ("list", "pods", False),
])
def test_controller_rbac_is_least_privilege(kubectl: list[str], applied: str, verb: str, resource: str,
                                            allowed: bool) -> None:
    if "/" in resource:
        name, sub = resource.split("/")
        out = kubectl_run(kubectl, "auth", "can-i", verb, name, f"--subresource={sub}", "--as", SA, "-n", "shop")
    else:
        out = kubectl_run(kubectl, "auth", "can-i", verb, resource, "--as", SA, "-n", "shop")
    assert out.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, out.stdout, out.stderr)
