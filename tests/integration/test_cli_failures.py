"""Every command through its failure modes, as a user runs it (a child process, the real servers): one line
`eventbus <command>: <what>: <why> (<what to do>)` naming the thing, the right exit code, never a traceback,
never an `Unclosed client session`. Plus what `publish` promises: stored (JetStream ack) unless `--core`,
names checked before the network, `--key` on every transport."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import pytest
from aiohttp import web

from tests.integration.support import REPO, serve

pytestmark = pytest.mark.integration

KAFKA_TRIGGER = """apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {name: orders, namespace: cli}
spec:
  source: {kafka: {topics: [cli-orders]}}
  function: {url: 'http://127.0.0.1:9/f'}
"""

HOOK_TRIGGER = """apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {name: hook, namespace: cli}
spec:
  source: {http: {path: /hook, auth: {bearerTokenFrom: {env: CLI_TEST_HOOK_TOKEN}}}}
  function: {name: hook}
"""

CRON_TRIGGER = """apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {name: tick, namespace: cli}
spec:
  source: {cron: {schedule: '@hourly'}}
  function: {name: tick}
"""


def eventbus(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `eventbus ARGS` with no EVENTBUS_* variables unless `env` gives them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "eventbus", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=clean)


def fails(done: subprocess.CompletedProcess[str], command: str, *names: str, code: int = 1) -> str:
    """Assert a one-sentence failure of `command` naming each of `names`; returns the sentence."""
    out = done.stdout + done.stderr
    assert done.returncode == code, out
    assert "Traceback" not in out and "Unclosed" not in out, out
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith(f"eventbus {command}: ")]
    assert len(lines) == 1, out
    for name in names:
        assert name in lines[0], out
    assert lines[0].endswith(")"), lines[0]  # ends with what to do
    return lines[0]


def publish(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return eventbus("publish", "--type", "com.example.t", "--source", "/cli", *args, env=env)


# --- publish ---------------------------------------------------------------------------------------


def test_publish_with_no_broker_configured() -> None:
    fails(publish("--topic", "orders"), "publish", "EVENTBUS_KAFKA_BOOTSTRAP", "--kafka")
    fails(publish("--nats", "", "--subject", "a.b"), "publish", "EVENTBUS_NATS_URL")


def test_publish_to_unreachable_brokers_fails_fast() -> None:
    start = time.monotonic()
    fails(publish("--kafka", "127.0.0.1:1", "--topic", "orders"), "publish", "cannot reach Kafka at 127.0.0.1:1")
    fails(publish("--nats", "nats://127.0.0.1:1", "--subject", "a.b"), "publish", "cannot reach NATS at nats://127.0.0.1:1")
    fails(publish("--http", "http://127.0.0.1:1", "--topic", "orders"), "publish",
          "cannot reach the eventbus ingress at http://127.0.0.1:1")
    assert time.monotonic() - start < 30


def test_publish_bad_file_and_bad_json() -> None:
    fails(publish("--kafka", "127.0.0.1:1", "--topic", "orders", "--data", "@/no/such/file.json"), "publish",
          "@/no/such/file.json", "No such file")
    fails(publish("--kafka", "127.0.0.1:1", "--topic", "orders", "--data", "{nope"), "publish", "--data", code=2)


def test_publish_refuses_invalid_names_before_any_network_call() -> None:
    # the brokers are unreachable: had anything been sent first, the failure would be "cannot reach"
    cases = [
        (["--kafka", "127.0.0.1:1", "--topic", "bad topic!"], ["invalid name 'bad topic!'", "' ' is not allowed"]),
        (["--kafka", "127.0.0.1:1", "--topic", "x" * 250], ["at most 249"]),
        (["--nats", "nats://127.0.0.1:1", "--subject", "orders.*"], ["invalid name 'orders.*'", "wildcard"]),
        (["--nats", "nats://127.0.0.1:1", "--subject", "a..b"], ["invalid name 'a..b'"]),
        (["--http", "http://127.0.0.1:1", "--topic", "a/b"], ["invalid name 'a/b'"]),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda c: publish(*c[0]), cases))
    for (_, names), done in zip(cases, results, strict=True):
        line = fails(done, "publish", *names)
        assert "cannot reach" not in line


def test_publish_usage_errors_exit_2_in_one_line() -> None:
    fails(eventbus("publish", "--topic", "t"), "publish", "--type", code=2)
    fails(publish("--topic", "t", "--core"), "publish", "--core", code=2)
    fails(publish("--nats", "nats://127.0.0.1:1"), "publish", "--subject", code=2)


def test_publish_debug_shows_the_traceback() -> None:
    done = eventbus("--debug", "publish", "--type", "t", "--source", "/s", "--kafka", "127.0.0.1:1",
                    "--topic", "o", "--data", "@/no/such/file")
    assert done.returncode == 1 and "Traceback" in done.stderr
    assert done.stderr.rstrip().splitlines()[-1].startswith("eventbus publish: --data @/no/such/file")


async def test_publish_nats_needs_a_stream_unless_core(nats_url: str, unique_name: str) -> None:
    subject = f"{unique_name}.orders"
    done = await asyncio.to_thread(publish, "--nats", nats_url, "--subject", subject)
    fails(done, "publish", f"subject {subject!r}", "no JetStream stream covers it", "--core")

    nc = await nats.connect(nats_url)
    try:
        sub = await nc.subscribe(subject)
        done = await asyncio.to_thread(publish, "--nats", nats_url, "--subject", subject, "--core", "--key", "k1")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["stored"] is False
        assert "fire-and-forget, not stored" in done.stderr
        msg = await sub.next_msg(timeout=5)
        assert msg.headers is not None and msg.headers["ce-partitionkey"] == "k1"

        js = nc.jetstream()
        await js.add_stream(name=unique_name.replace(".", "_").upper(), subjects=[f"{unique_name}.>"])
        try:
            done = await asyncio.to_thread(publish, "--nats", nats_url, "--subject", subject, "--key", "k2",
                                           "--id", "e-1")
            assert done.returncode == 0, done.stderr
            out = json.loads(done.stdout)
            assert (out["published"], out["stored"], out["seq"]) == ("e-1", True, 1)
            stored = await js.get_msg(out["stream"], 1)
            assert stored.headers is not None and stored.headers["ce-partitionkey"] == "k2"
        finally:
            await js.delete_stream(unique_name.replace(".", "_").upper())
    finally:
        await nc.close()


async def test_publish_http_carries_the_key_as_partitionkey() -> None:
    got: list[dict[str, str]] = []

    async def topics(request: web.Request) -> web.Response:
        got.append({k.lower(): v for k, v in request.headers.items()} | {"topic": request.match_info["name"]})
        return web.json_response({"published": 1}, status=202)

    app = web.Application()
    app.router.add_post("/topics/{name}", topics)
    runner, url = await serve(app)
    try:
        done = await asyncio.to_thread(publish, "--http", url, "--topic", "orders",
                                       "--key", "cust-7")
        assert done.returncode == 0, done.stderr
        assert got[0]["topic"] == "orders" and got[0]["ce-partitionkey"] == "cust-7"
    finally:
        await runner.cleanup()


# --- validate, run, up, cron next --------------------------------------------------------------------


def test_zero_triggers_is_an_error_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("---\n")
    (tmp_path / "noyaml").mkdir()
    (tmp_path / "noyaml" / "readme.txt").write_text("hi")
    empty, noyaml, missing = str(tmp_path / "empty.yaml"), str(tmp_path / "noyaml"), str(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(KAFKA_TRIGGER.replace("function:", "delivery: {retry: {attempts: 0}}\n  function:"))
    cases: list[tuple[list[str], list[str]]] = [
        (["validate", "-f", empty], [empty, "holds no Trigger"]),
        (["validate", "-f", noyaml], [noyaml, "no .yaml"]),
        (["run", "-f", noyaml], [noyaml]),
        (["up", "-f", noyaml], [noyaml]),
        # bad files
        (["validate", "-f", missing], [missing, "no such file"]),
        (["run", "-f", missing], [missing, "no such file"]),
        (["up", "-f", missing], [missing, "no such file"]),
        (["cron", "next", "-f", missing], [missing, "no such file"]),
        (["validate", "-f", str(bad)], ["spec.delivery.retry.attempts: must be >= 1"]),
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda c: eventbus(*c[0], timeout=30), cases))
    for (args, names), done in zip(cases, results, strict=True):
        command = " ".join(args[:2]) if args[0] == "cron" else args[0]
        fails(done, command, *names)


def test_missing_secret_names_the_trigger_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "a-cron.yaml").write_text(CRON_TRIGGER)
    (tmp_path / "b-hook.yaml").write_text(HOOK_TRIGGER)
    for command in ("run", "up"):
        done = eventbus(command, "-f", str(tmp_path), "--http-port", "0", "--gateway", "http://127.0.0.1:9",
                        timeout=30)
        fails(done, command, "trigger cli/hook", "CLI_TEST_HOOK_TOKEN")
        assert "trigger started" not in done.stderr  # the cron trigger, first in order, never started


def test_missing_broker_names_the_trigger(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(KAFKA_TRIGGER)
    done = eventbus("run", "-f", str(tmp_path), "--gateway", "http://127.0.0.1:9", timeout=30)
    fails(done, "run", "trigger cli/orders", "EVENTBUS_KAFKA_BOOTSTRAP")


def test_up_refuses_triggers_naming_undefined_functions(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(CRON_TRIGGER)
    (tmp_path / "fns.py").write_text("async def hello(event):\n    return None\n")
    done = eventbus("up", "-f", str(tmp_path / "t.yaml"), "--functions", str(tmp_path / "fns.py"),
                    "--http-port", "0", timeout=30)
    fails(done, "up", "cli/tick -> tick", "it defines: hello")
    fails(eventbus("up", "-f", str(tmp_path / "t.yaml"), "--functions", str(tmp_path / "none.py"), timeout=30),
          "up", "none.py", "no such file")


def test_port_in_use(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(CRON_TRIGGER)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = eventbus("run", "-f", str(tmp_path), "--gateway", "http://127.0.0.1:9", "--metrics-port", port,
                        timeout=30)
        fails(done, "run", "cannot listen", port, "--metrics-port")
