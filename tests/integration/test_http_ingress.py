"""The HTTP ingress against real Kafka, real NATS JetStream and a real HTTP function server."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import nats
import pytest
from aiohttp import web
from nats.js.api import StreamConfig
from prometheus_client import CollectorRegistry

from connectors.http_auth import sign
from eventbus.runtime import Runtime, RuntimeConfig
from schemas.loader import parse_triggers
from tests.integration.support import FunctionServer, create_topic, read_all
from triggers.metrics import Metrics

pytestmark = pytest.mark.integration

CE = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/test", "ce-type": "com.example.t",
      "Content-Type": "application/json"}


def http_trigger(name: str, path: str, *, mode: str = "sync", auth: str = "", topic: str = "",
                 url: str, retry: str = "{attempts: 3, delay: 10ms, maxDelay: 50ms}", extra: str = "") -> str:
    lines = [
        "apiVersion: eventbus.dev/v1alpha1", "kind: Trigger", f"metadata: {{name: {name}, namespace: test}}",
        "spec:", "  source:", "    http:", f"      path: {path}", f"      mode: {mode}",
    ]
    if auth:
        lines.append(f"      auth: {auth}")
    if topic:
        lines.append(f"      topic: {topic}")
    lines += [f"  function: {{url: '{url}'}}", "  delivery:", "    timeout: 5s", f"    retry: {retry}"]
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


class Ingress:
    """A Runtime with the ingress on an ephemeral port, and an HTTP client for it."""

    def __init__(self, fn: FunctionServer, **config: Any) -> None:
        self.fn = fn
        self.registry = CollectorRegistry()
        self.runtime = Runtime(RuntimeConfig(gateway=fn.url, http_port=0, grace=3.0, **config),
                               metrics=Metrics(self.registry))
        self.session = aiohttp.ClientSession()

    async def start(self, yaml_text: str = "") -> Ingress:
        await self.runtime.start(parse_triggers(yaml_text, "t.yaml") if yaml_text else [])
        for _ in range(200):
            if self.runtime.ready():
                break
            await asyncio.sleep(0.05)
        return self

    @property
    def url(self) -> str:
        assert self.runtime.ingress is not None
        return f"http://127.0.0.1:{self.runtime.ingress.port}"

    async def post(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, str], bytes]:
        async with self.session.post(self.url + path, data=body, headers=headers or {}) as r:
            return r.status, dict(r.headers), await r.read()

    async def close(self) -> None:
        await self.session.close()
        await self.runtime.stop()


@pytest.fixture
async def opened() -> AsyncIterator[list[Ingress]]:
    items: list[Ingress] = []
    yield items
    for i in items:
        await i.close()


async def start(opened: list[Ingress], fn: FunctionServer, yaml_text: str = "", **config: Any) -> Ingress:
    ing = Ingress(fn, **config)
    opened.append(ing)
    return await ing.start(yaml_text)


# --- sync -------------------------------------------------------------------------------------


async def test_sync_returns_the_function_answer(fn: FunctionServer, opened: list[Ingress]) -> None:
    async def answer(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
        return web.Response(status=201, body=b'{"ok":1}', headers={"Content-Type": "application/json",
                                                                    "X-Fn": "yes"})
    fn.behaviour = answer
    ing = await start(opened, fn, http_trigger("s", "/hooks/s", url=fn.url + "/fn"))
    status, headers, body = await ing.post("/hooks/s", b'{"a":1}', CE)
    assert (status, body, headers["X-Fn"]) == (201, b'{"ok":1}', "yes")
    r = fn.received[0]
    assert (r.headers["ce-id"], r.headers["ce-type"], r.body) == ("e-1", "com.example.t", b'{"a":1}')


async def test_sync_raw_request_is_wrapped(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("raw", "/hooks/gh", url=fn.url))
    status, _, _ = await ing.post("/hooks/gh", b"payload=1", {"Content-Type": "text/plain",
                                                            "X-GitHub-Delivery": "d-42"})
    assert status == 204
    h = fn.received[0].headers
    assert h["ce-id"] == "d-42"
    assert h["ce-type"] == "dev.eventbus.http.request"
    assert h["ce-source"].startswith("http://127.0.0.1:") and h["ce-source"].endswith("/hooks/gh")
    assert h["content-type"] == "text/plain"
    assert "ce-time" in h
    status, _, _ = await ing.post("/hooks/gh", b"x")
    assert status == 204
    assert uuid.UUID(fn.received[1].headers["ce-id"])  # a new UUID when the request carries no id


async def test_sync_retries_then_answers(fn: FunctionServer, opened: list[Ingress]) -> None:
    async def flaky(_: web.Request, __: bytes, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n < 3 else 200, body=b"done" if n >= 3 else b"busy")
    fn.behaviour = flaky
    ing = await start(opened, fn, http_trigger("r", "/hooks/r", url=fn.url))
    status, _, body = await ing.post("/hooks/r", b"{}", CE)
    assert (status, body, len(fn.received)) == (200, b"done", 3)


async def test_sync_batch_delivers_each_member(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("b", "/hooks/b", url=fn.url))
    batch = [{"specversion": "1.0", "id": f"b{i}", "source": "/s", "type": "t"} for i in range(3)]
    status, _, body = await ing.post("/hooks/b", json.dumps(batch).encode(),
                                     {"Content-Type": "application/cloudevents-batch+json"})
    assert status == 200
    assert [r["id"] for r in json.loads(body)["results"]] == ["b0", "b1", "b2"]
    assert fn.delivered_ids == ["b0", "b1", "b2"]


# --- errors -----------------------------------------------------------------------------------


async def test_400_names_the_field(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("v", "/hooks/v", url=fn.url))
    bad = {"specversion": "1.0", "id": "x", "source": "/s"}  # no type
    status, _, body = await ing.post("/hooks/v", json.dumps(bad).encode(),
                                     {"Content-Type": "application/cloudevents+json"})
    err = json.loads(body)
    assert (status, err["error"], err["field"]) == (400, "invalid_event", "type")
    status, _, body = await ing.post("/hooks/v", b"{}", {**CE, "ce-time": "yesterday"})
    assert (status, json.loads(body)["field"]) == (400, "time")
    assert fn.received == []


async def test_415_unknown_format(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("f", "/hooks/f", url=fn.url))
    status, _, body = await ing.post("/hooks/f", b"\x00", {"Content-Type": "application/cloudevents+avro"})
    assert (status, json.loads(body)["error"]) == (415, "unsupported_format")
    assert fn.received == []


async def test_413_above_max_body_and_64kib_passes(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("big", "/hooks/big", url=fn.url), max_body=100_000)
    status, _, _ = await ing.post("/hooks/big", b"x" * 65536, {**CE, "Content-Type": "text/plain"})
    assert status == 204
    assert len(fn.received[0].body) == 65536
    status, _, body = await ing.post("/hooks/big", b"x" * 100_001, {**CE, "Content-Type": "text/plain"})
    assert (status, json.loads(body)["error"]) == (413, "too_large")
    assert len(fn.received) == 1


async def test_429_with_retry_after_when_saturated(fn: FunctionServer, opened: list[Ingress]) -> None:
    release = asyncio.Event()

    async def slow(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=204)
    fn.behaviour = slow
    ing = await start(opened, fn, http_trigger("sat", "/hooks/sat", url=fn.url), http_max_in_flight=2)
    held = [asyncio.create_task(ing.post("/hooks/sat", b"{}", {**CE, "ce-id": f"h{i}"})) for i in range(2)]
    for _ in range(200):  # the server records a request before its behaviour answers
        if len(fn.received) == 2:
            break
        await asyncio.sleep(0.02)
    assert ing.registry.get_sample_value("eventbus_trigger_lag", {"trigger": "test/sat"}) == 2
    status, headers, body = await ing.post("/hooks/sat", b"{}", CE)
    assert (status, headers.get("Retry-After"), json.loads(body)["error"]) == (429, "1", "saturated")
    release.set()
    assert [s for s, _, _ in await asyncio.gather(*held)] == [204, 204]
    assert len(fn.received) == 2


async def test_503_when_kafka_is_unreachable(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, kafka="127.0.0.1:1")
    status, headers, body = await ing.post("/topics/anything", b"{}", CE)
    assert (status, json.loads(body)["error"]) == (503, "bus_unavailable")
    assert "Retry-After" in headers


async def test_503_when_nats_is_unreachable(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, nats="nats://127.0.0.1:1")
    status, headers, body = await ing.post("/topics/anything", b"{}", CE)
    assert (status, json.loads(body)["error"]) == (503, "bus_unavailable")
    assert "Retry-After" in headers


# --- auth -------------------------------------------------------------------------------------


async def test_hmac_rejects_bad_signatures(fn: FunctionServer, opened: list[Ingress],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", "s3cret")
    auth = "{hmac: {header: X-Hub-Signature-256, secretFrom: {env: TEST_HOOK_SECRET}, algorithm: sha256}}"
    ing = await start(opened, fn, http_trigger("gh", "/hooks/sig", url=fn.url, auth=auth))
    body = b'{"action":"opened"}'
    for headers in ({}, {"X-Hub-Signature-256": sign(b"wrong", body)}, {"X-Hub-Signature-256": "sha256=zz"},
                    {"X-Hub-Signature-256": sign(b"s3cret", body + b" ")}):
        status, _, resp = await ing.post("/hooks/sig", body, {"Content-Type": "application/json", **headers})
        assert (status, json.loads(resp)["error"]) == (401, "unauthorized"), headers
    assert fn.received == []
    status, _, _ = await ing.post("/hooks/sig", body, {"Content-Type": "application/json",
                                                        "X-Hub-Signature-256": sign(b"s3cret", body)})
    assert status == 204 and len(fn.received) == 1 and fn.received[0].body == body


async def test_bearer_rejects_wrong_tokens(fn: FunctionServer, opened: list[Ingress],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_HOOK_TOKEN", "tok-1")
    ing = await start(opened, fn, http_trigger("bt", "/hooks/bt", url=fn.url,
                                               auth="{bearerTokenFrom: {env: TEST_HOOK_TOKEN}}"))
    for headers in ({}, {"Authorization": "Bearer tok-2"}, {"Authorization": "Basic tok-1"}):
        status, h, _ = await ing.post("/hooks/bt", b"{}", {**CE, **headers})
        assert status == 401 and h.get("WWW-Authenticate", "").startswith("Bearer"), headers
    assert fn.received == []
    status, _, _ = await ing.post("/hooks/bt", b"{}", {**CE, "Authorization": "Bearer tok-1"})
    assert status == 204 and len(fn.received) == 1


# --- async ------------------------------------------------------------------------------------


async def test_async_kafka_delivers_after_202_with_retries(fn: FunctionServer, opened: list[Ingress],
                                                           kafka_bootstrap: str, unique_name: str) -> None:
    async def flaky(_: web.Request, __: bytes, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n == 1 else 204)
    fn.behaviour = flaky
    await create_topic(kafka_bootstrap, unique_name)
    ing = await start(opened, fn, http_trigger("ak", "/hooks/ak", mode="async", url=fn.url,
                                               topic=f"{{kafka: {{topic: {unique_name}}}}}"),
                      kafka=kafka_bootstrap)
    status, _, body = await ing.post("/hooks/ak", b'{"n":1}', {"Content-Type": "application/json",
                                                               "X-GitHub-Delivery": "gh-1"})
    assert (status, json.loads(body)) == (202, {"accepted": ["gh-1"], "topic": unique_name})
    await fn.wait_for(lambda: fn.delivered_ids == ["gh-1"], what="delivery from the topic")
    assert len(fn.received) == 2  # one retry
    assert fn.received[-1].body == b'{"n":1}'
    records = await read_all(kafka_bootstrap, unique_name, 1)
    assert dict(records[0].headers)["ce_id"] == b"gh-1"


async def test_async_nats_delivers_after_202(fn: FunctionServer, opened: list[Ingress], nats_url: str,
                                             unique_name: str) -> None:
    subject = f"{unique_name}.hooks"
    ing = await start(opened, fn, http_trigger("an", "/hooks/an", mode="async", url=fn.url,
                                               topic=f"{{nats: {{subject: {subject}}}}}"), nats=nats_url)
    status, _, _ = await ing.post("/hooks/an", b"{}", {**CE, "ce-id": "n-1"})
    assert status == 202
    await fn.wait_for(lambda: fn.delivered_ids == ["n-1"], what="delivery from JetStream")
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        stream = await js.find_stream_name_by_subject(subject)  # created for the trigger, file storage
        info = await js.stream_info(stream)
        assert info.state.messages == 1
        await js.delete_stream(stream)
    finally:
        await nc.close()


# --- /topics ----------------------------------------------------------------------------------


async def test_topics_to_kafka(fn: FunctionServer, opened: list[Ingress], kafka_bootstrap: str,
                               unique_name: str) -> None:
    await create_topic(kafka_bootstrap, unique_name)
    ing = await start(opened, fn, kafka=kafka_bootstrap)
    status, _, body = await ing.post(f"/topics/{unique_name}", b'{"k":1}', {**CE, "ce-partitionkey": "p1"})
    assert (status, json.loads(body)["accepted"]) == (202, ["e-1"])
    batch = [{"specversion": "1.0", "id": f"b{i}", "source": "/s", "type": "t", "data": {"i": i}} for i in range(2)]
    status, _, _ = await ing.post(f"/topics/{unique_name}", json.dumps(batch).encode(),
                                  {"Content-Type": "application/cloudevents-batch+json"})
    assert status == 202
    records = await read_all(kafka_bootstrap, unique_name, 3)
    assert [dict(r.headers)["ce_id"] for r in records] == [b"e-1", b"b0", b"b1"]
    assert records[0].key == b"p1" and records[0].value == b'{"k":1}'
    assert records[2].value == b'{"i": 1}' or json.loads(records[2].value) == {"i": 1}
    # not a CloudEvent in any mode: 400; a topic that does not exist: 404
    status, _, body = await ing.post(f"/topics/{unique_name}", b"raw", {"Content-Type": "text/plain"})
    assert (status, json.loads(body)["field"]) == (400, "ce-specversion")
    status, _, _ = await ing.post(f"/topics/{unique_name}-missing", b"{}", CE)
    assert status == 404


async def test_topics_to_nats(fn: FunctionServer, opened: list[Ingress], nats_url: str, unique_name: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=unique_name, subjects=[f"{unique_name}.>"]))
    try:
        ing = await start(opened, fn, nats=nats_url)
        status, _, _ = await ing.post(f"/topics/{unique_name}.orders", b'{"o":1}', {**CE, "ce-subject": "a b"})
        assert status == 202
        msg = await js.get_last_msg(unique_name, f"{unique_name}.orders")
        assert msg.data == b'{"o":1}'
        assert msg.headers is not None
        assert msg.headers["ce-id"] == "e-1" and msg.headers["ce-subject"] == "a%20b"
        status, _, body = await ing.post("/topics/no-stream-here", b"{}", CE)
        assert (status, json.loads(body)["error"]) == (404, "no_such_topic")
    finally:
        await js.delete_stream(unique_name)
        await nc.close()


async def test_admin_endpoints_on_ingress_port(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("adm", "/hooks/adm", url=fn.url))
    async with ing.session.get(ing.url + "/healthz") as r:
        assert r.status == 200
    async with ing.session.get(ing.url + "/readyz") as r:
        assert r.status == 200
    async with ing.session.get(ing.url + "/metrics") as r:
        assert r.status == 200
    async with ing.session.get(ing.url + "/hooks/adm") as r:
        assert r.status == 405
    async with ing.session.post(ing.url + "/nope") as r:
        assert r.status == 404



