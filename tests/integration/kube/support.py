"""Helpers for the Kubernetes tests: Trigger CRUD through the API, status polling, controller processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from connectors.kube import KubeApiError, KubeClient

REPO = Path(__file__).resolve().parents[3]


async def create_trigger(kube: KubeClient, namespace: str, doc: dict[str, Any] | str,
                         strict: bool = True) -> dict[str, Any]:
    body = yaml.safe_load(doc) if isinstance(doc, str) else doc
    body.setdefault("metadata", {})["namespace"] = namespace
    kwargs = {"field_validation": "Strict"} if strict else {}
    result: dict[str, Any] = await kube._call(kube.custom.create_namespaced_custom_object, "eventbus.dev",
                                              "v1alpha1", namespace, "triggers", body, **kwargs)
    return result


async def patch_trigger(kube: KubeClient, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = await kube._call(kube.custom.patch_namespaced_custom_object, "eventbus.dev", "v1alpha1",
                                              namespace, "triggers", name, patch,
                                              _content_type="application/merge-patch+json")
    return result


async def get_trigger(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = await kube._call(kube.custom.get_namespaced_custom_object, "eventbus.dev", "v1alpha1",
                                              namespace, "triggers", name)
    return result


async def delete_trigger(kube: KubeClient, namespace: str, name: str) -> None:
    await kube._call(kube.custom.delete_namespaced_custom_object, "eventbus.dev", "v1alpha1", namespace,
                     "triggers", name)


def ready_condition(obj: dict[str, Any]) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return dict(c)
    return {}


async def wait_status(kube: KubeClient, namespace: str, name: str, *, reason: str,
                      generation: int | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """Poll until the trigger's Ready reason is `reason` (and observedGeneration is `generation`)."""
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            obj = await get_trigger(kube, namespace, name)
        except KubeApiError:
            obj = {}
        st = obj.get("status") or {}
        if ready_condition(obj).get("reason") == reason and (
                generation is None or st.get("observedGeneration") == generation):
            return obj
        await asyncio.sleep(0.05)
    raise AssertionError(f"{namespace}/{name}: status never reached reason={reason} generation={generation}; "
                         f"last status: {obj.get('status')}")


class ControllerProcess:
    """`eventbus run --kubernetes` in a child process, as users run it (so kill -9 is real)."""

    def __init__(self, kubeconfig: str, namespace: str, gateway: str, log_file: Path,
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.cmd = [sys.executable, "-m", "eventbus", "run", "--kubernetes", "--namespace", namespace,
                    "--kubeconfig", kubeconfig, "--gateway", gateway, "--log-format", "json", "--grace", "3s",
                    *(extra or [])]
        self.log_file = log_file
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ControllerProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    async def aterminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        proc = self.proc
        proc.terminate()
        return await asyncio.to_thread(proc.wait, timeout)

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()
