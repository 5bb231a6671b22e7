"""Issue 8 item 4, the SSRF guard, walked through: a function URL at the metadata address, a DNS name that
resolves there (a test resolver stands in for DNS, the guard wraps it like the real one), a name that
rebinds after a first good answer, `--gateway` and `--url-template` results, `--allow-url` rules, and an HTTP
sink. A refusal is final (one attempt) and dead-lettered with the reason. Real runtime, real ingress, real
JetStream for the dead letters, a real aiohttp function server for the allowed cases."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from nats.js.api import StreamConfig

from connectors.gateway import GatewayClient, UrlPolicy
from schemas.cloudevent import CloudEvent
from schemas.nats_binding import from_nats
from tests.integration.support import FunctionServer
from tests.integration.test_http_ingress import CE, Ingress, http_trigger
from triggers.sinks import HttpSink, SinkError

pytestmark = pytest.mark.integration


class MapResolver(AbstractResolver):
    """DNS for the test: names map to addresses; `names` may be changed between lookups (rebinding)."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.lookups.append(host)
        if host not in self.names:
            raise OSError(f"test resolver: no such name {host}")
        return [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET6 if ":" in ip else
                 socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST} for ip in self.names[host]]

    async def close(self) -> None:
        return None


@pytest.fixture
async def dlq(nats_url: str, unique_name: str) -> AsyncIterator[tuple[Any, str]]:
    """A stream for dead letters: (JetStream context, subject)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=unique_name, subjects=[f"{unique_name}.>"]))
    try:
        yield js, f"{unique_name}.dlq"
    finally:
        try:
            await js.delete_stream(unique_name)
        finally:
            await nc.close()


async def dead_letters(js: Any, stream: str) -> list[CloudEvent]:
    out = []
    info = await js.stream_info(stream)
    for seq in range(info.state.first_seq, info.state.last_seq + 1) if info.state.messages else []:
        msg = await js.get_msg(stream, seq)
        ev = from_nats(msg.headers, msg.data or b"")
        assert ev is not None
        out.append(ev)
    return out


def trigger(name: str, url: str, dlq_subject: str, function: str | None = None) -> str:
    text = http_trigger(name, f"/hooks/{name}", url=url, retry="{attempts: 3, delay: 10ms, maxDelay: 50ms}",
                        extra=f"    deadLetter: {{nats: {{subject: {dlq_subject}}}}}")
    if function is not None:
        text = text.replace(f"function: {{url: '{url}'}}", function)
    return text


async def start(fn: FunctionServer, yaml_text: str, resolver: AbstractResolver | None = None,
                gateway: str | None = None, url_template: str | None = None, allow: tuple[str, ...] = (),
                **config: Any) -> Ingress:
    ing = Ingress(fn, allow_url=allow, **config)
    ing.runtime.gateway = GatewayClient(gateway or fn.url, url_policy=UrlPolicy.parse(allow), resolver=resolver,
                                        **({"url_template": url_template} if url_template else {}))
    return await ing.start(yaml_text)


async def test_metadata_address_directly_is_refused_final_and_dead_lettered(
        fn: FunctionServer, nats_url: str, unique_name: str, dlq: tuple[Any, str]) -> None:
    js, subject = dlq
    ing = await start(fn, trigger("meta", "http://169.254.169.254/latest/meta-data/", subject), nats=nats_url)
    try:
        status, _, body = await ing.post("/hooks/meta", b"{}", {**CE, "ce-id": "m-1"})
        assert status == 502 and "SSRF" in json.loads(body)["message"]
        [dead] = await dead_letters(js, unique_name)
        attrs = dead.attributes
        assert dead.id == "m-1" and str(attrs["deadletterattempts"]) == "1" and str(attrs["deadlettercode"]) == "0"
        reason = str(attrs["deadletterreason"])
        assert "refused by the SSRF guard" in reason and "169.254.169.254" in reason and "metadata" in reason
    finally:
        await ing.close()


async def test_dns_names_that_resolve_to_metadata_are_refused(fn: FunctionServer, nats_url: str,
                                                              unique_name: str, dlq: tuple[Any, str]) -> None:
    js, subject = dlq
    resolver = MapResolver({"metadata.attacker.test": ["169.254.169.254"], "fn.good.test": ["127.0.0.1"],
                            "link.attacker.test": ["fe80::1"], "rebind.attacker.test": ["127.0.0.1"]})
    yaml_text = "---\n".join([
        trigger("dns", f"http://metadata.attacker.test:{fn.port}/fn", subject),
        trigger("ll", f"http://link.attacker.test:{fn.port}/fn", subject),
        trigger("good", f"http://fn.good.test:{fn.port}/fn", subject),
        trigger("rebind", f"http://rebind.attacker.test:{fn.port}/fn", subject),
    ])
    ing = await start(fn, yaml_text, resolver, nats=nats_url)
    try:
        assert (await ing.post("/hooks/dns", b"{}", {**CE, "ce-id": "d-1"}))[0] == 502
        assert (await ing.post("/hooks/ll", b"{}", {**CE, "ce-id": "d-2"}))[0] == 502
        assert (await ing.post("/hooks/good", b"{}", {**CE, "ce-id": "d-3"}))[0] == 204
        assert (await ing.post("/hooks/rebind", b"{}", {**CE, "ce-id": "d-4"}))[0] == 204
        assert fn.delivered_ids == ["d-3", "d-4"]  # the refused ones never reached any server
        # the name now answers with the metadata address: the next resolution is checked again
        resolver.names["rebind.attacker.test"] = ["169.254.169.254"]
        session = ing.runtime.gateway._session
        assert session is not None
        session.connector.clear_dns_cache()  # type: ignore[union-attr]  # as when the TTL runs out
        for conn_key in list(session.connector._conns):  # type: ignore[union-attr]
            session.connector._conns.pop(conn_key)  # type: ignore[union-attr]  # no pooled keep-alive either
        assert (await ing.post("/hooks/rebind", b"{}", {**CE, "ce-id": "d-5"}))[0] == 502
        dead = {d.id: str(d.attributes["deadletterreason"]) for d in await dead_letters(js, unique_name)}
        assert set(dead) == {"d-1", "d-2", "d-5"}
        assert "'metadata.attacker.test' resolves to 169.254.169.254" in dead["d-1"]
        assert "link-local" in dead["d-2"] and "fe80::1" in dead["d-2"]
        assert "rebind.attacker.test" in dead["d-5"]
        assert fn.delivered_ids == ["d-3", "d-4"]
    finally:
        await ing.close()


async def test_gateway_and_url_template_results_are_checked(fn: FunctionServer, nats_url: str, unique_name: str,
                                                            dlq: tuple[Any, str]) -> None:
    js, subject = dlq
    by_name = "function: {name: billing}"
    ing = await start(fn, trigger("gw", "x", subject, function=by_name), gateway="http://169.254.169.254",
                      nats=nats_url)
    try:
        assert (await ing.post("/hooks/gw", b"{}", {**CE, "ce-id": "g-1"}))[0] == 502
    finally:
        await ing.close()
    resolver = MapResolver({"billing.fns.test": ["169.254.169.254"]})
    ing = await start(fn, trigger("tpl", "x", subject, function=by_name), resolver, nats=nats_url,
                      url_template=f"http://{{name}}.fns.test:{fn.port}/{{namespace}}")
    try:
        assert (await ing.post("/hooks/tpl", b"{}", {**CE, "ce-id": "g-2"}))[0] == 502
    finally:
        await ing.close()
    dead = {d.id: d.attributes for d in await dead_letters(js, unique_name)}
    assert set(dead) == {"g-1", "g-2"} and all(str(a["deadletterattempts"]) == "1" for a in dead.values())
    assert fn.received == []


async def test_allow_url_rules(fn: FunctionServer, nats_url: str, unique_name: str, dlq: tuple[Any, str]) -> None:
    js, subject = dlq
    resolver = MapResolver({"fn.good.test": ["127.0.0.1"], "meta.good.test": ["169.254.169.254"]})
    yaml_text = "---\n".join([
        trigger("allowed", f"http://fn.good.test:{fn.port}/fn", subject),
        trigger("direct", f"{fn.url}/fn", subject),  # 127.0.0.1 matches no rule
        trigger("meta", f"http://meta.good.test:{fn.port}/fn", subject),  # a matching name, a refused address
    ])
    ing = await start(fn, yaml_text, resolver, allow=("*.good.test",), nats=nats_url)
    try:
        assert (await ing.post("/hooks/allowed", b"{}", {**CE, "ce-id": "a-1"}))[0] == 204
        assert (await ing.post("/hooks/direct", b"{}", {**CE, "ce-id": "a-2"}))[0] == 502
        assert (await ing.post("/hooks/meta", b"{}", {**CE, "ce-id": "a-3"}))[0] == 502
    finally:
        await ing.close()
    dead = {d.id: str(d.attributes["deadletterreason"]) for d in await dead_letters(js, unique_name)}
    assert "matches no --allow-url rule" in dead["a-2"] and "metadata" in dead["a-3"]
    assert fn.delivered_ids == ["a-1"]


async def test_http_sink_at_metadata_is_refused() -> None:
    ev = CloudEvent({"specversion": "1.0", "id": "s-1", "source": "/s", "type": "t"}, None)
    resolver = MapResolver({"sink.attacker.test": ["169.254.169.254"]})
    gateway = GatewayClient(None, resolver=resolver)
    try:
        for url in ("http://169.254.169.254/dlq", "http://[fd00:ec2::254]/dlq", "http://sink.attacker.test/dlq"):
            with pytest.raises(SinkError, match="SSRF"):
                await HttpSink(gateway, url, timeout=2.0).send(ev)
    finally:
        await gateway.close()
