"""Reconcile speed of `eventbus run --kubernetes` against the real kube-apiserver of `scripts/services up`.

    .venv/bin/python bench/reconcile.py [--triggers 500] [--edits 100]

One controller process watches a fresh namespace. The bench creates N Triggers (half cron on a yearly
schedule, half HTTP: cheap to run) and prints the time until every one is `Ready`; then edits `--edits` of
them (a new function name: a restart) and prints edit -> `status.observedGeneration` caught up, p50/p99,
beside the baseline measured in the same run: edit -> the watch event of the edit itself (what the API
server and a watch cost before the controller does anything). Last, the controller's RSS.
Targets: all Ready within 30 s for 500, edit p99 under 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from connectors.kube import KubeClient, WatchGone  # noqa: E402

GROUP, VERSION, PLURAL = "eventbus.dev", "v1alpha1", "triggers"


def kubeconfig() -> str:
    path = os.environ.get("EVENTBUS_KUBECONFIG")
    env_file = ROOT / ".services.env"
    if not path and env_file.is_file():
        for line in env_file.read_text().splitlines():
            if line.startswith("export EVENTBUS_KUBECONFIG="):
                path = line.split("=", 1)[1].strip()
    if not path:
        sys.exit("no EVENTBUS_KUBECONFIG: run `scripts/services up` first")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def trigger(i: int, ns: str, kinds: list[str]) -> dict[str, Any]:
    kind = kinds[i % len(kinds)]
    source: dict[str, Any] = ({"cron": {"schedule": "0 0 1 1 *"}} if kind == "cron"
                              else {"http": {"path": f"/bench/{ns}/{i}"}})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Trigger", "metadata": {"name": f"t{i}", "namespace": ns},
            "spec": {"source": source, "function": {"name": f"f{i}"}}}


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Watcher:
    """Watches the namespace: when each trigger became Ready, saw generation 2, reported generation 2."""

    def __init__(self, kube: KubeClient, ns: str) -> None:
        self.kube, self.ns = kube, ns
        self.ready_at: dict[str, float] = {}
        self.spec2_at: dict[str, float] = {}
        self.observed2_at: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            items, rv = await self.kube.list_triggers(self.ns)
            for obj in items:
                self._see(obj)
            try:
                while True:
                    async for ev in self.kube.watch_triggers(self.ns, rv, 60):
                        rv = ev.object.get("metadata", {}).get("resourceVersion", rv)
                        self._see(ev.object)
            except WatchGone:
                continue

    def _see(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        name = obj["metadata"]["name"]
        st = obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
        if ready:
            self.ready_at.setdefault(name, now)
        if obj["metadata"].get("generation") == 2:
            self.spec2_at.setdefault(name, now)
            if st.get("observedGeneration") == 2 and ready:
                self.observed2_at.setdefault(name, now)


async def wait(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(0.05)
    return False


def apply_crd(kc: str) -> None:
    kubectl = subprocess.run([str(ROOT / "scripts" / "kube-build")], capture_output=True, text=True,
                             check=True).stdout.strip() + "/kubectl"
    subprocess.run([kubectl, "--kubeconfig", kc, "apply", "--server-side", "--force-conflicts", "-f",
                    str(ROOT / "manifests" / "crd" / "triggers.eventbus.dev.yaml")], check=True, capture_output=True)


def start_controller(kc: str, ns: str) -> tuple[subprocess.Popen[bytes], Any]:
    log = open(f"/tmp/{ns}.log", "wb")
    ctl = subprocess.Popen([sys.executable, "-m", "eventbus", "run", "--kubernetes", "--namespace", ns,
                            "--kubeconfig", kc, "--gateway", "http://127.0.0.1:9", "--http-port", str(free_port()),
                            "--log-level", "warning"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return ctl, log


async def main(n: int, edits: int, kinds: list[str]) -> None:
    kc = kubeconfig()
    kube = KubeClient.from_kubeconfig(kc)
    await asyncio.to_thread(apply_crd, kc)
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    await kube._call(kube.core.create_namespace, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    ctl, log = await asyncio.to_thread(start_controller, kc, ns)
    watcher = Watcher(kube, ns)
    watch_task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(2)  # the controller's start (imports, first list)
        sem = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            async with sem:
                await kube._call(kube.custom.create_namespaced_custom_object, GROUP, VERSION, ns, PLURAL,
                                 trigger(i, ns, kinds))

        t0 = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(n)))
        created = time.monotonic() - t0
        ok = await wait(lambda: len(watcher.ready_at) >= n, 120)
        all_ready = (max(watcher.ready_at.values()) - t0) if ok else float("nan")
        print(f"{n} triggers: created in {created:.2f} s, all Ready {all_ready:.2f} s after the first create"
              f"{'' if ok else f' (TIMEOUT: {len(watcher.ready_at)} Ready)'}  (target < 30 s)")

        edited_at: dict[str, float] = {}

        async def edit(i: int) -> None:
            async with sem:
                edited_at[f"t{i}"] = time.monotonic()
                await kube._call(kube.custom.patch_namespaced_custom_object, GROUP, VERSION, ns, PLURAL, f"t{i}",
                                 {"spec": {"function": {"name": f"g{i}"}}},
                                 _content_type="application/merge-patch+json")

        targets = list(range(0, n, max(1, n // edits)))[:edits]
        await asyncio.gather(*(edit(i) for i in targets))
        names = [f"t{i}" for i in targets]
        ok = await wait(lambda: all(x in watcher.observed2_at for x in names), 60)
        lat = [watcher.observed2_at[x] - edited_at[x] for x in names if x in watcher.observed2_at]
        base = [watcher.spec2_at[x] - edited_at[x] for x in names if x in watcher.spec2_at]
        p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
        b50 = statistics.median(base)
        print(f"{len(names)} edits -> observedGeneration: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
              f"{'' if ok else ' (TIMEOUT)'}  (target p99 < 2 s); baseline edit -> watch event p50 "
              f"{b50 * 1000:.0f} ms; ratio p50 {p50 / b50:.1f}x")
        print(f"controller RSS with {n} triggers: {rss_mb(ctl.pid):.0f} MB")
    finally:
        watch_task.cancel()
        ctl.terminate()
        await asyncio.to_thread(ctl.wait, 60)
        log.close()
        kube.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--triggers", type=int, default=500)
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--kinds", default="cron,http", help="source kinds, in turn (default cron,http)")
    a = ap.parse_args()
    asyncio.run(main(a.triggers, a.edits, a.kinds.split(",")))
