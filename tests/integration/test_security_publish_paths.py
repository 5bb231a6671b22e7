"""Issue 8 on the other publish paths: reserved subjects and topics through the CLI (NATS, Kafka, --http) and
the Python API, `eventbus publish --http` with `--token` / `EVENTBUS_TOKEN`, and `eventbus up`'s defaults
(loopback bind, loopback-only /topics, and 401 with a startup warning when bound elsewhere)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.js.api import StreamConfig

import eventbus
from connectors.embedded_nats import pick_port
from connectors.http_auth import PublisherAuth
from eventbus.producer import ReservedTopicError
from tests.integration.support import REPO, FunctionServer, create_topic, read_all
from tests.integration.test_http_ingress import CE, Ingress

pytestmark = pytest.mark.integration

TOKEN = "cli-token-3c9e71aa"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventbus", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


async def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, *args, env=env)


@pytest.fixture
async def stream(nats_url: str, unique_name: str) -> AsyncIterator[Any]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=unique_name, subjects=[f"{unique_name}.>"]))
    try:
        for i in range(3):
            await js.publish(f"{unique_name}.seed", f"{i}".encode())
        yield js
    finally:
        try:
            await js.delete_stream(unique_name)
        finally:
            await nc.close()


async def test_reserved_subjects_through_the_cli_and_the_api(nats_url: str, unique_name: str,
                                                             stream: Any) -> None:
    purge = f"$JS.API.STREAM.PURGE.{unique_name}"
    for subject in (purge, "http.default.hook"):  # each CLI run is a Python start-up: two suffice
        done = await cli("publish", "--nats", nats_url, "--subject", subject, "--type", "t", "--source", "/s",
                         "--data", "{}")
        assert done.returncode != 0 and "reserved" in done.stderr and subject in done.stderr, done.stderr
    for subject in (purge, f"$JS.API.STREAM.DELETE.{unique_name}", "$KV.eventbus_cron.x", "_INBOX.a",
                    "$SYS.REQ.SERVER.PING", "http.default.hook"):
        with pytest.raises(ReservedTopicError, match="reserved"):
            await eventbus.publish(type="t", source="/s", nats=nats_url, subject=subject, data={})
    assert (await stream.stream_info(unique_name)).state.messages == 3  # the purge never happened
    # an ordinary subject still publishes through both paths
    done = await cli("publish", "--nats", nats_url, "--subject", f"{unique_name}.ok", "--type", "t",
                     "--source", "/s", "--data", "{}")
    assert done.returncode == 0, done.stderr
    await eventbus.publish(type="t", source="/s", nats=nats_url, subject=f"{unique_name}.ok", data={})
    assert (await stream.stream_info(unique_name)).state.messages == 5


async def test_reserved_kafka_topics_through_the_cli_and_the_api(kafka_bootstrap: str) -> None:
    for topic in ("__consumer_offsets", "__transaction_state"):
        done = await cli("publish", "--kafka", kafka_bootstrap, "--topic", topic, "--type", "t", "--source", "/s")
        assert done.returncode != 0 and "reserved" in done.stderr and topic in done.stderr, done.stderr
        with pytest.raises(ReservedTopicError):
            await eventbus.publish(type="t", source="/s", kafka=kafka_bootstrap, topic=topic)


async def test_publish_http_with_token_and_env(fn: FunctionServer, kafka_bootstrap: str, unique_name: str,
                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    await create_topic(kafka_bootstrap, unique_name)
    monkeypatch.setenv("SEC_CLI_TOKEN", TOKEN)
    (tmp_path / "p.yaml").write_text(
        f"publishers: [{{name: cli, tokenFrom: {{env: SEC_CLI_TOKEN}}, topics: ['{unique_name}']}}]")
    ing = Ingress(fn, kafka=kafka_bootstrap, publishers=PublisherAuth.from_file(str(tmp_path / "p.yaml")))
    await ing.start()
    try:
        base = ["publish", "--http", ing.url, "--topic", unique_name, "--type", "t", "--source", "/s"]
        no_token = {"EVENTBUS_TOKEN": ""}
        done = await cli(*base, "--id", "none", env=no_token)
        assert done.returncode == 1 and "401" in done.stderr
        done = await cli(*base, "--id", "wrong", "--token", "not-the-token", env=no_token)
        assert done.returncode == 1 and "401" in done.stderr and "not-the-token" not in done.stderr
        done = await cli(*base, "--id", "flag", "--token", TOKEN, env=no_token)
        assert done.returncode == 0, done.stderr
        done = await cli(*base, "--id", "env", env={"EVENTBUS_TOKEN": TOKEN})
        assert done.returncode == 0, done.stderr
        done = await cli("publish", "--http", ing.url, "--topic", "__consumer_offsets", "--type", "t",
                         "--source", "/s", "--token", TOKEN)
        assert done.returncode == 1 and "reserved" in done.stderr
        await eventbus.publish(type="t", source="/s", http=ing.url, topic=unique_name, id="api", token=TOKEN)
        with pytest.raises(eventbus.PublishError, match="401"):
            await eventbus.publish(type="t", source="/s", http=ing.url, topic=unique_name, id="api-x")
        records = await read_all(kafka_bootstrap, unique_name, 3)
        assert [dict(r.headers)["ce_id"] for r in records] == [b"flag", b"env", b"api"]
    finally:
        await ing.close()


# --- eventbus up: where it binds and who may publish --------------------------------------------

HOOK = """apiVersion: eventbus.dev/v1alpha1
kind: Trigger
metadata: {name: hook, namespace: up}
spec:
  source: {http: {path: /hooks/h, mode: sync}}
  function: {url: 'FN'}
"""


def _outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            addr = str(s.getsockname()[0])
        except OSError:
            return None
    return None if addr.startswith("127.") else addr


def _spawn_up(tmp_path: Path, fn: FunctionServer, nats_url: str, extra: tuple[str, ...]
              ) -> tuple[subprocess.Popen[bytes], int, Path]:
    (tmp_path / "triggers").mkdir(exist_ok=True)
    (tmp_path / "triggers" / "t.yaml").write_text(HOOK.replace("FN", fn.url))
    port = pick_port()
    log = tmp_path / f"up-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTBUS_")}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "eventbus", "up", "-f", "triggers", "--nats", nats_url,
                                 "--http-port", str(port), "--grace", "1s", *extra],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
    return proc, port, log


async def _run_up(tmp_path: Path, fn: FunctionServer, nats_url: str, *extra: str
                  ) -> tuple[subprocess.Popen[bytes], int, Path]:
    proc, port, log = _spawn_up(tmp_path, fn, nats_url, extra)
    deadline = time.monotonic() + 30
    while "eventbus is up" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.1)
    return proc, port, log


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(20)


async def test_up_binds_loopback_and_serves_loopback_only(fn: FunctionServer, nats_url: str, unique_name: str,
                                                          stream: Any, tmp_path: Path) -> None:
    proc, port, log = await _run_up(tmp_path, fn, nats_url)
    try:
        text = log.read_text()
        assert "host=127.0.0.1" in text
        assert "/topics accepts unauthenticated requests from loopback addresses only" in text
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/topics/{unique_name}.up", data=b"{}", headers=CE) as r:
                assert r.status == 202
        outward = _outward_address()
        if outward is not None:  # nothing listens there
            with pytest.raises(OSError):
                socket.create_connection((outward, port), timeout=2).close()
    finally:
        await asyncio.to_thread(_stop, proc)


async def test_up_on_all_interfaces_without_publishers_closes_topics(fn: FunctionServer, nats_url: str,
                                                                     unique_name: str, stream: Any,
                                                                     tmp_path: Path) -> None:
    proc, port, log = await _run_up(tmp_path, fn, nats_url, "--host", "0.0.0.0")
    try:
        assert "/topics answers 401 to every request: the ingress listens on 0.0.0.0" in log.read_text()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"http://127.0.0.1:{port}/topics/{unique_name}.up", data=b"{}", headers=CE) as r:
                assert (r.status, r.headers.get("WWW-Authenticate")) == (401, "Bearer")
            async with http.post(f"http://127.0.0.1:{port}/hooks/h", data=b"{}", headers=CE) as r:
                assert r.status == 204  # webhooks are the triggers' own business
        assert (await stream.stream_info(unique_name)).state.messages == 3
    finally:
        await asyncio.to_thread(_stop, proc)


async def test_run_refuses_a_bad_publishers_file(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(HOOK.replace("FN", "http://127.0.0.1:1"))
    (tmp_path / "p.yaml").write_text("publishers: [{name: a, tokenFrom: {env: SEC_NOT_SET_ANYWHERE}, topics: [x]}]")
    done = await cli("run", "-f", str(tmp_path / "t.yaml"), "--publishers", str(tmp_path / "p.yaml"),
                     env={"SEC_NOT_SET_ANYWHERE": ""})
    assert done.returncode == 1
    assert "a.tokenFrom.env: environment variable SEC_NOT_SET_ANYWHERE is not set" in done.stderr
