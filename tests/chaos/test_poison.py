"""Poison input on every source: the trigger keeps running, the poison message is dead-lettered (HTTP: answered
4xx), the next event is delivered.

Kinds: undecodable (structured mode, broken JSON), unsupported format (`application/cloudevents-batch+json`,
which Kafka and NATS do not define), a big payload (10 MB on Kafka, whose source topic allows it; the
function answers 413 as a gateway would, so it is dead-lettered, and the dead letter is too large for the
dead-letter topic; NATS: the server's max_payload, as 10 MB cannot be published there; HTTP: 10 MB to the
ingress), and invalid UTF-8 in a `ce-` header (NATS: sent on the raw protocol, as nats-py cannot send it).
One trigger per kind, each with its own source topic/subject and dead-letter topic, so rows are separate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import nats
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from eventbus.runtime import Runtime, RuntimeConfig
from schemas.loader import parse_triggers
from tests.chaos.brokers import free_port
from tests.chaos.ledger import Ledger
from tests.chaos.traffic import (
    KafkaSender,
    ce_headers,
    create_topics,
    dead_letter_ids,
    js_stream,
    kafka_trigger,
    nats_trigger,
)
from tests.integration.support import FunctionServer
from triggers.metrics import Metrics

KINDS = ("undecodable", "unsupported format", "big payload", "invalid UTF-8 header")
BIG = 10 * 1024 * 1024
FUNCTION_LIMIT = 512 * 1024


async def limited(request: web.Request, body: bytes, attempt: int) -> web.StreamResponse:
    """A function behind a gateway with a 512 KiB body limit (below the NATS max_payload of 1 MiB)."""
    if len(body) > FUNCTION_LIMIT:
        return web.Response(status=413, text="payload too large")
    return web.Response(status=204)


async def start_runtime(fn: FunctionServer, yaml_text: str, **config: object) -> Runtime:
    rt = Runtime(RuntimeConfig(gateway=fn.url, grace=5.0, **config),  # type: ignore[arg-type]
                 metrics=Metrics(CollectorRegistry()))
    await rt.start(parse_triggers(yaml_text, "poison.yaml"))
    for _ in range(400):
        if rt.ready():
            return rt
        await asyncio.sleep(0.05)
    await rt.stop()
    raise AssertionError("runtime not ready")


async def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def check_kinds(source: str, fn: FunctionServer, rt: Runtime, bootstrap: str,
                      dlqs: dict[str, str], nexts: dict[str, str], timeout: float) -> list[str]:
    """One row per kind; returns the failures (all kinds are checked before the test fails)."""
    await wait_for(lambda: set(nexts.values()) <= set(fn.delivered_ids), timeout)
    failures = []
    for kind in KINDS:
        dead = await dead_letter_ids(bootstrap, dlqs[kind], expect=1, idle=0.3, timeout=3)
        ledger = Ledger(f"poison {source}: {kind}")
        ledger.send([f"poison-{_slug(kind)}", nexts[kind]])
        ledger.delivered = [i for i in fn.delivered_ids if i in (nexts[kind], f"poison-{_slug(kind)}")]
        ledger.dead_lettered = [f"poison-{_slug(kind)}"] * len(dead)
        problems = []
        if not dead:
            problems.append("poison not dead-lettered")
        if nexts[kind] not in fn.delivered_ids:
            problems.append("next event not delivered")
        if f"poison-{_slug(kind)}" in fn.delivered_ids:
            problems.append("poison delivered to the function as a valid event")
        if not rt.ready():
            problems.append("runtime not ready")
        ledger.record("FAIL: " + ", ".join(problems) if problems else "")
        if problems:
            failures.append(f"{source} {kind}: {', '.join(problems)}")
    return failures


def _slug(kind: str) -> str:
    return kind.split()[0].lower().replace("-", "")


async def test_poison_kafka(kafka_bootstrap: str, fn: FunctionServer, unique_name: str) -> None:
    fn.behaviour = limited
    topics = {k: f"{unique_name}.{_slug(k)}" for k in KINDS}
    dlqs = {k: f"{t}.dlq" for k, t in topics.items()}
    await create_topics(kafka_bootstrap, topics.values(), config={"max.message.bytes": str(16 << 20)})
    await create_topics(kafka_bootstrap, dlqs.values())
    nexts = {k: f"next-kafka-{_slug(k)}" for k in KINDS}
    poison: dict[str, tuple[bytes | None, list[tuple[str, bytes]]]] = {
        "undecodable": (b'{"specversion": "1.0", "id": ', [("content-type", b"application/cloudevents+json")]),
        "unsupported format": (json.dumps([{"specversion": "1.0", "id": "poison-unsupported", "source": "/p",
                                            "type": "t"}]).encode(),
                               [("content-type", b"application/cloudevents-batch+json")]),
        "big payload": (b"x" * BIG, []),
        "invalid UTF-8 header": (b"{}", [*ce_headers("poison-invalid")[:1],
                                         ("ce_id", b"poison-\xff\xfe"), *ce_headers("x")[2:]]),
    }
    for kind, (value, headers) in poison.items():
        async with KafkaSender(kafka_bootstrap, topics[kind], max_request_size=16 << 20) as sender:
            await sender.send_raw(value, headers, key=b"k")
            await sender.send_ids([nexts[kind]])
    yaml_text = "---\n".join(
        kafka_trigger(f"poison-{_slug(k)}", topics[k], dead_letter=dlqs[k], ordering="partition", concurrency=4)
        for k in KINDS)
    rt = await start_runtime(fn, yaml_text, kafka=kafka_bootstrap)
    try:
        failures = await check_kinds("Kafka", fn, rt, kafka_bootstrap, dlqs, nexts, timeout=25)
    finally:
        await rt.stop()
    assert not failures, failures


async def _raw_nats_publish(url: str, subject: str, header_block: bytes, payload: bytes) -> None:
    """HPUB on the NATS protocol itself: header bytes nats-py would refuse to build."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}\r\n')
        hdr = b"NATS/1.0\r\n" + header_block + b"\r\n"
        writer.write(b"HPUB %s %d %d\r\n%s%s\r\nPING\r\n" % (subject.encode(), len(hdr), len(hdr) + len(payload),
                                                          hdr, payload))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"PONG"), line
    finally:
        writer.close()


async def _nats_poison(url: str, subjects: dict[str, str], nexts: dict[str, str], max_payload: int,
                       jetstream: bool) -> None:
    nc = await nats.connect(url)
    try:
        publish: Callable[..., Awaitable[object]] = nc.jetstream().publish if jetstream else nc.publish
        await publish(subjects["undecodable"], b'{"specversion": "1.0", "id": ',
                      headers={"Content-Type": "application/cloudevents+json"})
        await publish(subjects["unsupported format"], b"[]",
                      headers={"Content-Type": "application/cloudevents-batch+json"})
        await publish(subjects["big payload"], b"x" * (max_payload - 512))
        await _raw_nats_publish(url, subjects["invalid UTF-8 header"],
                                b"ce-specversion: 1.0\r\nce-id: poison-invalid\r\nce-source: /p\r\n"
                                b"ce-type: t\r\nce-subject: bad-\xff\xfe\r\n", b"{}")
        for kind in KINDS:
            headers = {"ce-specversion": "1.0", "ce-id": nexts[kind], "ce-source": "/chaos", "ce-type": "t"}
            await publish(subjects[kind], b"{}", headers=headers)
        await nc.flush()
    finally:
        await nc.close()


@pytest.mark.parametrize("jetstream", [True, False], ids=["jetstream", "core"])
async def test_poison_nats(jetstream: bool, kafka_bootstrap: str, nats_url: str, fn: FunctionServer,
                           unique_name: str) -> None:
    fn.behaviour = limited
    base = unique_name.replace("-", "_")
    subjects = {k: f"{base}.{_slug(k)}" for k in KINDS}
    dlqs = {k: f"{unique_name}.{_slug(k)}.dlq" for k in KINDS}
    await create_topics(kafka_bootstrap, dlqs.values())
    stream = f"S_{base}" if jetstream else None
    if stream:
        await js_stream(nats_url, stream, [f"{base}.>"])
    nexts = {k: f"next-{'js' if jetstream else 'core'}-{_slug(k)}" for k in KINDS}
    yaml_text = "---\n".join(
        nats_trigger(f"poison-{_slug(k)}", subjects[k], stream=stream, dead_letter=dlqs[k], concurrency=4)
        for k in KINDS)
    nc = await nats.connect(nats_url)
    max_payload = nc.max_payload
    await nc.close()
    rt = await start_runtime(fn, yaml_text, kafka=kafka_bootstrap, nats=nats_url)
    try:
        await _nats_poison(nats_url, subjects, nexts, max_payload, jetstream)
        failures = await check_kinds("JetStream" if jetstream else "core NATS", fn, rt, kafka_bootstrap, dlqs, nexts,
                                     timeout=20)
    finally:
        await rt.stop()
    assert not failures, failures


async def _raw_http(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 10)
        return int(status.split()[1])
    finally:
        writer.close()


async def test_poison_http(fn: FunctionServer, unique_name: str) -> None:
    fn.behaviour = limited
    port = free_port()
    yaml_text = (
        "apiVersion: eventbus.dev/v1alpha1\nkind: Trigger\nmetadata: {name: poison-http, namespace: chaos}\n"
        f"spec:\n  source:\n    http: {{path: /hooks/{unique_name}}}\n  function: {{name: poison-http}}\n"
        "  delivery: {timeout: 5s, retry: {attempts: 2, delay: 10ms}}\n"
    )
    rt = await start_runtime(fn, yaml_text, http_port=port)
    url = f"http://127.0.0.1:{port}/hooks/{unique_name}"
    ce = {"ce-specversion": "1.0", "ce-source": "/chaos", "ce-type": "t", "Content-Type": "application/json"}
    failures = []
    try:
        async with aiohttp.ClientSession() as http:
            poison: dict[str, Callable[[], Awaitable[int]]] = {}

            async def post(body: bytes, headers: dict[str, str]) -> int:
                try:
                    async with http.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                        return resp.status
                except aiohttp.ClientError:
                    return 0

            poison["undecodable"] = lambda: post(b'{"specversion": ', {"Content-Type": "application/cloudevents+json"})
            poison["unsupported format"] = lambda: post(b"[]", {"Content-Type": "application/cloudevents+avro"})
            poison["big payload"] = lambda: post(b"x" * BIG, {**ce, "ce-id": "poison-big"})
            poison["invalid UTF-8 header"] = lambda: _raw_http(port, (
                f"POST /hooks/{unique_name} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "ce-specversion: 1.0\r\nce-id: poison-invalid\r\nce-source: /p\r\nce-type: t\r\n"
                "Content-Length: 2\r\nConnection: close\r\n").encode() + b"ce-subject: bad-\xff\xfe\r\n\r\n{}")
            for kind in KINDS:
                status = await poison[kind]()
                next_id = f"next-http-{_slug(kind)}"
                next_status = await post(b"{}", {**ce, "ce-id": next_id})
                ledger = Ledger(f"poison HTTP: {kind}")
                ledger.send([next_id])
                ledger.delivered = [i for i in fn.delivered_ids if i in (next_id, f"poison-{_slug(kind)}")]
                problems = []
                if not 400 <= status < 500:
                    problems.append(f"poison answered {status}, not 4xx")
                if next_status // 100 != 2 or next_id not in fn.delivered_ids:
                    problems.append(f"next event answered {next_status}")
                if f"poison-{_slug(kind)}" in fn.delivered_ids:
                    problems.append("poison delivered to the function")
                if not rt.ready():
                    problems.append("runtime not ready")
                ledger.record(("FAIL: " + ", ".join(problems)) if problems else f"poison answered {status}")
                if problems:
                    failures.append(f"HTTP {kind}: {', '.join(problems)}")
    finally:
        await rt.stop()
    assert not failures, failures
