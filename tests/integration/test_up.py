"""`eventbus up` as a user runs it: a child process with the embedded NATS server, the ingress, triggers
and dev functions; it delivers, stops cleanly on SIGINT and resumes undelivered events after a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from connectors.embedded_nats import pick_port
from tests.integration.support import REPO, FunctionServer

pytestmark = pytest.mark.integration

FUNCTIONS = '''
from pathlib import Path

async def record(event):
    with open("seen.txt", "a") as f:
        f.write(event.id + "\\n")
    return {"got": event.id}
'''


def triggers(fn_url: str) -> str:
    return f"""apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: jobs, namespace: up}}
spec:
  source:
    nats: {{subject: jobs.>, jetstream: {{stream: EVENTBUS, durable: jobs}}}}
  function: {{url: '{fn_url}/jobs'}}
  delivery:
    timeout: 5s
    retry: {{attempts: 10000, delay: 50ms, maxDelay: 200ms}}
---
apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {{name: rec, namespace: up}}
spec:
  source:
    http: {{path: /hooks/rec, mode: sync}}
  function: {{name: record}}
"""


class Up:
    def __init__(self, cwd: Path, port: int) -> None:
        self.cwd, self.port = cwd, port
        self.log = cwd / "up.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Up:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
        env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "eventbus", "up", "-f", "triggers", "--functions", "fns.py",
                 "--http-port", str(self.port), "--grace", "3s"],
                cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        return self

    async def wait_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            if self.log.read_text().count("eventbus is up") > self.starts:
                self.starts += 1
                return
            await asyncio.sleep(0.1)
        raise AssertionError("eventbus up did not come up:\n" + self.log.read_text())

    starts = 0

    def sigint(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_up_delivers_stops_on_sigint_and_resumes(tmp_path: Path, fn: FunctionServer) -> None:
    (tmp_path / "triggers").mkdir()
    (tmp_path / "triggers" / "t.yaml").write_text(triggers(fn.url))
    (tmp_path / "fns.py").write_text(FUNCTIONS)
    port = pick_port(preferred=18090)
    up = Up(tmp_path, port).start()
    ce = {"ce-specversion": "1.0", "ce-source": "/t", "ce-type": "t", "Content-Type": "application/json"}
    try:
        await up.wait_up()
        nats_port = int(up.log.read_text().split("embedded NATS nats://127.0.0.1:")[1].split(" ")[0])
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            # a topic on the embedded bus -> the JetStream trigger -> the function
            async with http.post(f"{base}/topics/jobs.a", data=b'{"n":1}', headers={**ce, "ce-id": "j1"}) as r:
                assert r.status == 202
            await fn.wait_for(lambda: fn.delivered_ids == ["j1"], what="j1 delivered")
            # a sync webhook -> the dev gateway's Python function; its return value is the answer
            async with http.post(f"{base}/hooks/rec", data=b"hi", headers={"X-GitHub-Delivery": "d1"}) as r:
                assert (r.status, json.loads(await r.read())) == (200, {"got": "d1"})
            assert (tmp_path / "seen.txt").read_text() == "d1\n"

            # the function fails: j2 stays undelivered across a clean stop
            async def failing(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
                return web.Response(status=503)
            fn.behaviour = failing
            async with http.post(f"{base}/topics/jobs.b", data=b'{"n":2}', headers={**ce, "ce-id": "j2"}) as r:
                assert r.status == 202
            await asyncio.sleep(0.5)
            assert any(r.ce_id == "j2" for r in fn.received)
        assert up.sigint() == 0
        assert "eventbus up stopped" in up.log.read_text()
        assert not _listening(port) and not _listening(nats_port)  # ingress and embedded server are gone
        assert (tmp_path / ".eventbus" / "jetstream").is_dir()

        async def ok(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
            return web.Response(status=204)
        fn.behaviour = ok
        up.start()
        await up.wait_up()
        await fn.wait_for(lambda: "j2" in fn.delivered_ids, what="j2 delivered after restart")
        assert fn.delivered_ids.count("j1") == 1  # delivered and acked before the stop: not again
        assert up.sigint() == 0
    finally:
        up.close()


def test_up_without_f_runs_the_quick_start(tmp_path: Path) -> None:
    """From the repository root, `eventbus up` takes the quick start's triggers and functions, not the
    `triggers/` Python package."""
    port = pick_port(preferred=18095)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "eventbus", "up", "--http-port", str(port), "--data-dir",
                                 str(tmp_path / "data")], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120  # a loaded CI machine
        while "eventbus is up" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        assert "2 trigger(s)" in text and "quickstart/orders" in text and "quickstart/webhook" in text, text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
