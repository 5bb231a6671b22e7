"""Fixtures for the tests against a real kube-apiserver (started by `scripts/services up` / `scripts/kube up`).

The kubeconfig is found like the brokers: `$EVENTBUS_KUBECONFIG`, then `.services.env`; otherwise the test
fails and says to run `scripts/services up` (never a skip). The Trigger CRD is applied once per session
from manifests/ and each test gets a fresh namespace (the API server alone never finishes deleting one).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from connectors.kube import KubeClient, load_configuration
from tests.conftest import _configured

REPO = Path(__file__).resolve().parents[3]
KUBECONFIG_VAR = "EVENTBUS_KUBECONFIG"
CRD_FILE = REPO / "manifests" / "crd" / "triggers.eventbus.dev.yaml"


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    found = _configured(KUBECONFIG_VAR)
    if not found:
        pytest.fail(f"no Kubernetes API server to test against: set {KUBECONFIG_VAR}, or run `scripts/services up` "
                    "(it builds and starts etcd + kube-apiserver and writes .services.env)", pytrace=False)
    path, origin = found
    if not Path(path).is_file():
        pytest.fail(f"{path} (from {origin}) does not exist: run `scripts/services up`", pytrace=False)
    from kubernetes import client

    api = client.ApiClient(load_configuration(path))
    try:
        client.VersionApi(api).get_code(_request_timeout=5)
    except Exception as exc:
        pytest.fail(f"kube-apiserver of {path} (from {origin}) does not answer: {exc}. "
                    "Is it running? `scripts/services up`.", pytrace=False)
    finally:
        api.close()
    return path


def kubectl_bin() -> str:
    out = subprocess.run([str(REPO / "scripts" / "kube-build")], capture_output=True, text=True, check=True)
    return str(Path(out.stdout.strip()) / "kubectl")


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Iterator[list[str]]:
    """The kubectl command line (built by scripts/kube-build), pointed at the test API server."""
    yield [kubectl_bin(), "--kubeconfig", kubeconfig]


@pytest.fixture(scope="session")
def crd(kubectl: list[str]) -> str:
    """The Trigger CRD from manifests/, applied (server-side) and Established."""
    subprocess.run([*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE)],
                   check=True, capture_output=True, text=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Established", "--timeout=30s",
                    "crd/triggers.eventbus.dev"], check=True, capture_output=True, text=True)
    return "triggers.eventbus.dev"


@pytest.fixture
async def kube(kubeconfig: str, crd: str) -> AsyncIterator[KubeClient]:
    client = KubeClient.from_kubeconfig(kubeconfig)
    yield client
    client.close()


@pytest.fixture
async def namespace(kube: KubeClient) -> str:
    name = f"eb-{uuid.uuid4().hex[:8]}"
    await kube._call(kube.core.create_namespace, {"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": name}})
    return name
