"""The KEDA samples in manifests/keda/ point at what eventbus really serves: ports, keys, paths, Triggers."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from eventbus.cli import build_parser
from eventbus.keda import NAME_KEY, NAMESPACE_KEY
from schemas.loader import load_triggers
from triggers.scaling import ROW_KEYS

ROOT = Path(__file__).resolve().parents[2]


def _controller_args() -> list[str]:
    docs = list(yaml.safe_load_all((ROOT / "manifests" / "controller.yaml").read_text()))
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    return [str(a) for a in container["args"]]


def _flag(args: list[str], name: str) -> int:
    """The value of `--name N` or `--name=N` in the container's args."""
    for i, a in enumerate(args):
        if a == name:
            return int(args[i + 1])
        if a.startswith(name + "="):
            return int(a.split("=", 1)[1])
    raise AssertionError(f"{name} is not in the controller's args {args}")


def _trigger(doc: dict[str, Any]) -> dict[str, Any]:
    [t] = doc["spec"]["triggers"]
    return dict(t)


def _example_keys() -> set[str]:
    return {t.key for t in load_triggers(str(ROOT / "manifests" / "examples"))}


def test_run_accepts_the_ports_the_manifests_use() -> None:
    args = build_parser().parse_args(["run", "-f", "x", "--metrics-port", "9000", "--keda-port", "9090"])
    assert (args.metrics_port, args.keda_port) == (9000, 9090)


def test_external_push_matches_the_keda_port_and_keys() -> None:
    t = _trigger(yaml.safe_load((ROOT / "manifests/keda/scaledobject-external-push.yaml").read_text()))
    assert t["type"] == "external-push"
    md = t["metadata"]
    assert int(md["scalerAddress"].rsplit(":", 1)[1]) == _flag(_controller_args(), "--keda-port")
    assert f"{md[NAMESPACE_KEY]}/{md[NAME_KEY]}" in _example_keys()


def test_metrics_api_matches_the_admin_port_and_row() -> None:
    t = _trigger(yaml.safe_load((ROOT / "manifests/keda/scaledobject-metrics-api.yaml").read_text()))
    assert t["type"] == "metrics-api"
    md = t["metadata"]
    url = urlsplit(md["url"])
    assert url.port == _flag(_controller_args(), "--metrics-port")
    _, scaling, ns, name = url.path.split("/")
    assert scaling == "scaling" and f"{ns}/{name}" in _example_keys()
    assert md["valueLocation"] in ROW_KEYS
