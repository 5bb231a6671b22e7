"""Issue 8, the ingress's doors, each tried by walking through it: publishing without or with a wrong token,
outside a token's topics, to reserved subjects/topics and to an async HTTP trigger's internal subject;
replayed, stale and rotated webhook signatures; slow bodies, floods, big headers and too many connections.
Real runtime, real ingress, real NATS JetStream and Kafka, a real aiohttp function server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from aiohttp import web
from nats.js.api import StreamConfig

from connectors.http_auth import PublisherAuth, sign
from connectors.http_ingress import IngressLimits
from tests.integration.support import FunctionServer, create_topic, read_all
from tests.integration.test_http_ingress import CE, Ingress, http_trigger

pytestmark = pytest.mark.integration

SHOP_TOKEN = "shop-8a1d0c3f-token"
AUDIT_TOKEN = "audit-55e0f1b2-token"


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


def publishers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str) -> PublisherAuth:
    """Two publishers: shop (token from env) may write `<prefix>.orders.>` and `<prefix>.payments.*`;
    audit (token from a file) may write `<prefix>.audit`."""
    monkeypatch.setenv("SEC_SHOP_TOKEN", SHOP_TOKEN)
    (tmp_path / "audit-token").write_text(AUDIT_TOKEN + "\n")
    path = tmp_path / "publishers.yaml"
    path.write_text(f"""publishers:
  - name: shop-backend
    tokenFrom: {{env: SEC_SHOP_TOKEN}}
    topics: ["{prefix}.orders.>", "{prefix}.payments.*"]
  - name: audit
    tokenFrom: {{file: {tmp_path / "audit-token"}}}
    topics: ["{prefix}.audit", ">"]
""")
    return PublisherAuth.from_file(str(path))


@pytest.fixture
async def stream(nats_url: str, unique_name: str) -> AsyncIterator[Any]:
    """A JetStream stream `<unique>` over `<unique>.>`, deleted afterwards."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=unique_name, subjects=[f"{unique_name}.>"]))
    try:
        yield js
    finally:
        try:
            await js.delete_stream(unique_name)
        finally:
            await nc.close()


def bearer(token: str) -> dict[str, str]:
    return {**CE, "Authorization": f"Bearer {token}"}


# --- 1. publishing needs a credential ---------------------------------------------------------


async def test_topics_need_a_listed_token_loopback_included(fn: FunctionServer, opened: list[Ingress],
                                                            nats_url: str, unique_name: str, stream: Any,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    auth = publishers(tmp_path, monkeypatch, unique_name)
    ing = await start(opened, fn, nats=nats_url, publishers=auth)
    orders = f"/topics/{unique_name}.orders.eu"
    for headers in (CE, bearer("wrong-token"), {**CE, "Authorization": SHOP_TOKEN},
                    {**CE, "Authorization": f"Basic {SHOP_TOKEN}"}, bearer("")):
        status, h, body = await ing.post(orders, b"{}", headers)
        assert (status, h.get("WWW-Authenticate"), json.loads(body)["error"]) == (401, "Bearer", "unauthorized")
    status, _, _ = await ing.post(orders, b'{"n":1}', {**bearer(SHOP_TOKEN), "ce-id": "ok-1"})
    assert status == 202
    status, _, _ = await ing.post(f"/topics/{unique_name}.audit", b"{}", bearer(AUDIT_TOKEN))  # file token
    assert status == 202
    # a token writing outside its patterns: 403 naming neither the token nor other topics
    for topic in (f"{unique_name}.audit", f"{unique_name}.payments.card.refund", f"{unique_name}.orders"):
        status, _, body = await ing.post(f"/topics/{topic}", b"{}", bearer(SHOP_TOKEN))
        text = body.decode()
        assert status == 403 and json.loads(text)["error"] == "forbidden", text
        assert SHOP_TOKEN not in text and "shop-backend" not in text and ".orders.>" not in text
        assert "payments.*" not in text
    info = await stream.stream_info(unique_name)
    assert info.state.messages == 2  # only the two authorised events were written


async def test_loopback_ingress_without_publishers_serves_loopback(fn: FunctionServer, opened: list[Ingress],
                                                                  nats_url: str, unique_name: str, stream: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "eventbus.ingress")
    ing = await start(opened, fn, nats=nats_url, http_host="127.0.0.1")
    status, _, _ = await ing.post(f"/topics/{unique_name}.x", b"{}", CE)
    assert status == 202
    assert "accepts unauthenticated requests from loopback addresses only" in caplog.text


async def test_non_loopback_ingress_without_publishers_answers_401(fn: FunctionServer, opened: list[Ingress],
                                                                  nats_url: str, unique_name: str, stream: Any,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "eventbus.ingress")
    ing = await start(opened, fn, nats=nats_url, http_host="0.0.0.0")
    status, headers, body = await ing.post(f"/topics/{unique_name}.x", b"{}", CE)  # even from loopback
    assert (status, headers.get("WWW-Authenticate")) == (401, "Bearer")
    assert "non-loopback" in json.loads(body)["message"]
    warning = [r for r in caplog.records if r.levelno == logging.WARNING and "/topics answers 401" in r.message]
    assert warning and "0.0.0.0" in warning[0].message and "--publishers" in warning[0].message
    assert (await stream.stream_info(unique_name)).state.messages == 0


# --- 2. reserved subjects and topics at the ingress ---------------------------------------------


async def test_reserved_subjects_are_403_and_the_stream_survives(fn: FunctionServer, opened: list[Ingress],
                                                                 nats_url: str, unique_name: str, stream: Any,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    auth = publishers(tmp_path, monkeypatch, unique_name)  # `audit` may write `>`: still refused below
    ing = await start(opened, fn, nats=nats_url, publishers=auth)
    for i in range(3):
        status, _, _ = await ing.post(f"/topics/{unique_name}.audit", b"{}", {**bearer(AUDIT_TOKEN), "ce-id": f"a{i}"})
        assert status == 202
    for subject in (f"$JS.API.STREAM.PURGE.{unique_name}", f"$JS.API.STREAM.DELETE.{unique_name}",
                    f"$JS.API.CONSUMER.DELETE.{unique_name}.c", "$KV.eventbus_cron.default-tick",
                    "$O.store.x", "$SYS.REQ.SERVER.PING", "_INBOX.x.y", "$G", "http.default.hook"):
        status, _, body = await ing.post(f"/topics/{subject}", b"{}", bearer(AUDIT_TOKEN))
        err = json.loads(body)
        assert (status, err["error"]) == (403, "reserved_topic"), subject
        assert "reserved" in err["message"] and subject in err["message"]
    info = await stream.stream_info(unique_name)
    assert info.state.messages == 3  # not purged, not deleted


async def test_reserved_kafka_topics_are_403(fn: FunctionServer, opened: list[Ingress],
                                             kafka_bootstrap: str) -> None:
    ing = await start(opened, fn, kafka=kafka_bootstrap)
    for topic in ("__consumer_offsets", "__transaction_state"):
        status, _, body = await ing.post(f"/topics/{topic}", b"{}", CE)
        err = json.loads(body)
        assert (status, err["error"]) == (403, "reserved_topic")
        assert "Kafka topics starting with __" in err["message"]


async def test_forged_event_on_async_triggers_internal_subject_is_refused(
        fn: FunctionServer, opened: list[Ingress], nats_url: str, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The async trigger parks webhook events after their HMAC check; /topics must not write there."""
    monkeypatch.setenv("SEC_HOOK_SECRET", "hook-secret")
    auth = "{hmac: {secretFrom: {env: SEC_HOOK_SECRET}}}"
    custom = f"{unique_name}.hooks"
    name = f"forge-{unique_name[2:]}"
    yaml_text = (http_trigger(name, "/hooks/default", mode="async", url=fn.url, auth=auth) + "---\n"
                 + http_trigger(f"{name}-c", "/hooks/custom", mode="async", url=fn.url, auth=auth,
                                topic=f"{{nats: {{subject: {custom}}}}}"))
    ing = await start(opened, fn, yaml_text, nats=nats_url)
    try:
        for topic in (f"http.test.{name}", custom):
            status, _, body = await ing.post(f"/topics/{topic}", b'{"forged":true}', {**CE, "ce-id": "forged"})
            assert (status, json.loads(body)["error"]) == (403, "reserved_topic"), topic
        body = b'{"real":true}'
        status, _, _ = await ing.post("/hooks/custom", body, {"Content-Type": "application/json",
                                                              "X-Hub-Signature-256": sign(b"hook-secret", body),
                                                              "X-GitHub-Delivery": "real-1"})
        assert status == 202
        await fn.wait_for(lambda: "real-1" in fn.delivered_ids, what="the signed webhook")
        await asyncio.sleep(0.5)
        assert "forged" not in fn.delivered_ids and all(b"forged" not in r.body for r in fn.received)
    finally:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        for subject in (f"http.test.{name}", custom):
            try:
                await js.delete_stream(await js.find_stream_name_by_subject(subject))
            except Exception:
                pass
        await nc.close()


# --- 3. replay-safe webhooks --------------------------------------------------------------------


async def test_webhook_replay_stale_timestamp_and_rotated_secret(fn: FunctionServer, opened: list[Ingress],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEC_HMAC_OLD", "old-hmac-secret")
    monkeypatch.setenv("SEC_HMAC_NEW", "new-hmac-secret")
    auth = ("{hmac: {header: X-Signature, secretsFrom: [{env: SEC_HMAC_OLD}, {env: SEC_HMAC_NEW}], "
            "timestampHeader: X-Timestamp, tolerance: 5m}}")
    ing = await start(opened, fn, http_trigger("rp", "/hooks/rp", url=fn.url, auth=auth,
                                               retry="{attempts: 1}"))

    def signed(secret: bytes, body: bytes, ts: int, delivery: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-Timestamp": str(ts), "Webhook-Id": delivery,
                "X-Signature": sign(secret, body, timestamp=ts)}

    body = b'{"n":1}'
    now = int(time.time())
    first = signed(b"old-hmac-secret", body, now, "w-1")
    assert (await ing.post("/hooks/rp", body, first))[0] == 204
    status, _, resp = await ing.post("/hooks/rp", body, first)  # the same delivery, replayed
    assert (status, json.loads(resp)["error"]) == (409, "replayed")
    status, _, _ = await ing.post("/hooks/rp", body, {**first, "Webhook-Id": "w-other"})  # id changed, same sig
    assert status == 409
    assert (await ing.post("/hooks/rp", body, signed(b"new-hmac-secret", body, now, "w-2")))[0] == 204  # rotated
    for headers in (signed(b"new-hmac-secret", body, now - 301, "w-3"),  # stale
                    signed(b"new-hmac-secret", body, now + 400, "w-4"),  # from the future
                    signed(b"retired-secret", body, now, "w-5"),  # not one of the configured secrets
                    {**signed(b"new-hmac-secret", body, now, "w-6"), "X-Timestamp": str(now + 1)}):  # ts forged
        status, _, resp = await ing.post("/hooks/rp", body, headers)
        assert (status, json.loads(resp)["error"]) == (401, "unauthorized"), headers
    assert len(fn.received) == 2

    # a delivery the function refused is not remembered: the sender's retry passes
    async def failing(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
        return web.Response(status=500)
    fn.behaviour = failing
    body = b'{"n":7}'
    retry = signed(b"new-hmac-secret", body, now, "w-7")
    assert (await ing.post("/hooks/rp", body, retry))[0] == 500

    async def ok(_: web.Request, __: bytes, ___: int) -> web.StreamResponse:
        return web.Response(status=204)
    fn.behaviour = ok
    assert (await ing.post("/hooks/rp", body, retry))[0] == 204


# --- 5. ingress limits ----------------------------------------------------------------------------


async def _raw(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_slow_body_gets_408_and_others_are_served(fn: FunctionServer, opened: list[Ingress],
                                                        nats_url: str, unique_name: str, stream: Any) -> None:
    ing = await start(opened, fn, nats=nats_url, http_max_in_flight=2,
                      ingress_limits=IngressLimits(body_timeout=2.0))
    assert ing.runtime.ingress is not None
    port = ing.runtime.ingress.port
    head = (f"POST /topics/{unique_name}.slow HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: s\r\n"
            "ce-source: /s\r\nce-type: t\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
    slow = [await _raw(port, head.encode()) for _ in range(8)]  # more slow senders than in-flight slots

    async def drip(writer: asyncio.StreamWriter) -> None:
        for _ in range(20):
            await asyncio.sleep(0.3)
            try:
                writer.write(b" ")
                await writer.drain()
            except (ConnectionError, RuntimeError):
                return
    drips = [asyncio.create_task(drip(w)) for _, w in slow]
    started = time.monotonic()
    try:
        for i in range(5):  # other clients are served at once while the slow ones drip
            t0 = time.monotonic()
            status, _, _ = await ing.post(f"/topics/{unique_name}.fast", b"{}", {**CE, "ce-id": f"f{i}"})
            assert status == 202 and time.monotonic() - t0 < 1.0
        for reader, _ in slow:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            assert line.startswith(b"HTTP/1.1 408"), line
        assert time.monotonic() - started < 5.0
    finally:
        for t in drips:
            t.cancel()
        for _, w in slow:
            w.close()
    assert (await stream.stream_info(unique_name)).state.messages == 5


async def test_flood_over_the_rate_gets_429_with_retry_after(fn: FunctionServer, opened: list[Ingress],
                                                             nats_url: str, unique_name: str, stream: Any,
                                                             tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    auth = publishers(tmp_path, monkeypatch, unique_name)
    ing = await start(opened, fn, nats=nats_url, publishers=auth,
                      ingress_limits=IngressLimits(rate_limit=1, rate_burst=5))
    results = await asyncio.gather(*(ing.post(f"/topics/{unique_name}.orders.x", b"{}",
                                              {**bearer(SHOP_TOKEN), "ce-id": f"r{i}"}) for i in range(20)))
    codes = [s for s, _, _ in results]
    assert codes.count(202) in (5, 6) and codes.count(202) + codes.count(429) == 20, codes  # 6: one refilled
    for status, headers, body in results:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1 and json.loads(body)["error"] == "rate_limited"
            assert SHOP_TOKEN not in body.decode()
    status, _, _ = await ing.post(f"/topics/{unique_name}.audit", b"{}", bearer(AUDIT_TOKEN))  # per token
    assert status == 202
    await asyncio.sleep(1.1)  # 1/s refills one
    status, _, _ = await ing.post(f"/topics/{unique_name}.orders.x", b"{}", {**bearer(SHOP_TOKEN), "ce-id": "later"})
    assert status == 202


async def test_header_limits(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("hl", "/hooks/hl", url=fn.url),
                      ingress_limits=IngressLimits(max_header_size=1024, max_headers=20))
    status, _, _ = await ing.post("/hooks/hl", b"{}", {**CE, "X-Big": "a" * 2000})
    assert status == 400
    status, _, _ = await ing.post("/hooks/hl", b"{}", {**CE, **{f"X-H{i}": "v" for i in range(30)}})
    assert status == 400
    assert fn.received == []
    status, _, _ = await ing.post("/hooks/hl", b"{}", {**CE, "X-Ok": "a" * 500})
    assert status == 204 and len(fn.received) == 1


async def test_max_connections(fn: FunctionServer, opened: list[Ingress]) -> None:
    ing = await start(opened, fn, http_trigger("mc", "/hooks/mc", url=fn.url),
                      ingress_limits=IngressLimits(max_connections=3))
    assert ing.runtime.ingress is not None
    port = ing.runtime.ingress.port
    held = [await _raw(port, b"") for _ in range(3)]
    await asyncio.sleep(0.1)
    reader, writer = await _raw(port, b"POST /hooks/mc HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 5.0)  # answered and closed
    assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer
    writer.close()
    for _, w in held:
        w.close()
    await asyncio.sleep(0.2)
    status, _, _ = await ing.post("/hooks/mc", b"{}", CE)
    assert status == 204


async def test_half_sent_headers_are_closed_after_the_idle_timeout(fn: FunctionServer,
                                                                    opened: list[Ingress]) -> None:
    """Slowloris on the headers: a request line and a header or two, then nothing."""
    ing = await start(opened, fn, http_trigger("it", "/hooks/it", url=fn.url),
                      ingress_limits=IngressLimits(idle_timeout=1.0))
    assert ing.runtime.ingress is not None
    reader, writer = await _raw(ing.runtime.ingress.port, b"POST /hooks/it HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5.0) == b""  # closed by the server
    assert time.monotonic() - started < 3.0
    writer.close()
    assert (await ing.post("/hooks/it", b"{}", CE))[0] == 204


async def test_topics_to_kafka_with_a_token(fn: FunctionServer, opened: list[Ingress], kafka_bootstrap: str,
                                            unique_name: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Patterns apply to Kafka topic names too (one token when the name has no dots)."""
    topic = f"{unique_name}.orders.kafka"
    await create_topic(kafka_bootstrap, topic)
    auth = publishers(tmp_path, monkeypatch, unique_name)
    ing = await start(opened, fn, kafka=kafka_bootstrap, publishers=auth)
    assert (await ing.post(f"/topics/{topic}", b"{}", CE))[0] == 401
    assert (await ing.post(f"/topics/{topic}", b"{}", bearer(SHOP_TOKEN)))[0] == 202
    assert len(await read_all(kafka_bootstrap, topic, 1)) == 1
