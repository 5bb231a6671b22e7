"""Scaling hints inside the runtime: a lag watcher per trigger on the hint board (sharing the runtime's
NATS connections and one Kafka lag reader per cluster), and the outputs that serve it: the KEDA external
scaler (`--keda-port`), `GET /scaling/<namespace>/<name>` on the admin port, pushes, Prometheus gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from aiohttp import web

from connectors.jetstream_lag import JetStreamLagReader
from connectors.kafka import resolve_bootstrap, security_settings
from connectors.kafka_lag import KafkaLagReader
from schemas.trigger import KafkaSource, NatsSource, Sink, Trigger
from triggers.hint_board import HintBoard
from triggers.lag_watchers import watcher_for
from triggers.sinks import EventSink, open_sink

if TYPE_CHECKING:
    from grpc import aio

    from eventbus.runtime import Controller, Runtime
    from eventbus.scaling_push import HintPusher

log = logging.getLogger("eventbus.scaling")

PUSH_TIMEOUT = 5.0
"""A push to a URL gives up after this (then retries with backoff): a dead receiver costs one task."""


class KafkaReaders:
    """One lag reader per Kafka cluster (and credentials), shared by every trigger on it."""

    def __init__(self, default_bootstrap: str | None) -> None:
        self.default = default_bootstrap
        self._readers: dict[tuple[str, str], KafkaLagReader] = {}
        self._lock = asyncio.Lock()

    async def get(self, source: KafkaSource) -> KafkaLagReader:
        bootstrap = resolve_bootstrap(source.bootstrap_servers, self.default)
        key = (bootstrap, repr((source.sasl, source.tls)))
        async with self._lock:
            reader = self._readers.get(key)
            if reader is None:
                reader = KafkaLagReader(bootstrap, security_settings(source.sasl, source.tls))
                await reader.start()
                self._readers[key] = reader
            return reader

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self._readers.values())

    async def close(self) -> None:
        for r in self._readers.values():
            await r.close()
        self._readers.clear()


class _RuntimeEnv:
    """`WatchEnv` over the runtime's shared clients and its controllers (what is in flight here)."""

    def __init__(self, service: ScalingService) -> None:
        self.service = service
        self.kafka = KafkaReaders(service.rt.config.kafka)
        self._js: dict[int, JetStreamLagReader] = {}

    async def kafka_reader(self, source: KafkaSource) -> KafkaLagReader:
        return await self.kafka.get(source)

    async def jetstream_reader(self, source: NatsSource) -> JetStreamLagReader:
        from connectors.nats_client import connect_options

        nc = await self.service.rt.nats_client(source.servers, **connect_options(source))
        reader = self._js.get(id(nc))
        if reader is None:
            reader = self._js[id(nc)] = JetStreamLagReader(nc.jetstream(timeout=5))
        return reader

    def in_flight(self, trigger: Trigger) -> int:
        controller = self.service.controllers.get(trigger.key)
        http = trigger.spec.source.http
        if http is not None:
            # The HTTP trigger counts its requests; its `lag` adds the internal consumer's (async mode),
            # unless the watcher reads that topic from Kafka itself (an explicit `topic.kafka`).
            own_topic = http.topic is not None and http.topic.kafka is not None
            value = getattr(controller, "in_flight" if own_topic else "lag", None)
            if isinstance(value, int):
                return value
        return max(0, self.service.rt.metrics.in_flight(trigger.key))


class ScalingService:
    """Owned by a Runtime: `start()` before the admin server (it adds the /scaling route), `add`/`remove`
    with the triggers, `stop()` first on shutdown."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.board = HintBoard(rt.metrics)
        self.env = _RuntimeEnv(self)
        self.controllers: dict[str, Controller | None] = {}
        self.pushers: dict[str, HintPusher] = {}
        self.keda: aio.Server | None = None
        self._started = False

    async def start(self) -> None:
        self._started = True
        self.rt.extra_routes.append(web.get("/scaling/{namespace}/{name}", self._route))
        await self.board.start()
        port = self.rt.config.keda_port
        if port is not None:
            from eventbus.keda import start_keda

            self.keda = await start_keda(self.board, port)

    def add(self, trigger: Trigger, controller: Controller | None) -> None:
        if not self._started:
            return  # a runtime's private timer runtime: its owner watches these triggers
        self.controllers[trigger.key] = controller
        self.board.add(watcher_for(trigger, self.env))
        push = trigger.spec.scaling.push
        if push is not None:
            from eventbus.scaling_push import HintPusher

            async def make_sink() -> EventSink:
                return await self._push_sink(trigger, push)

            pusher = self.pushers[trigger.key] = HintPusher(trigger, self.board, make_sink)
            pusher.start()

    async def remove(self, key: str) -> None:
        pusher = self.pushers.pop(key, None)
        if pusher is not None:
            await pusher.stop()
        self.board.remove(key)
        self.controllers.pop(key, None)

    async def stop(self) -> None:
        for key in list(self.pushers):
            await self.remove(key)
        if self.keda is not None:
            await self.keda.stop(1.0)
            self.keda = None
        await self.board.stop()
        await self.env.kafka.close()

    async def _push_sink(self, trigger: Trigger, spec: Sink) -> EventSink:
        """`scaling.push` on its cluster (the same rule as dead-letter sinks: its own servers, else the
        source's, else the runtime's default); unguarded: the pusher retries with its own backoff."""
        from connectors.kafka import BOOTSTRAP_ENV
        from connectors.nats_client import connect_options
        from connectors.nats_publish import NatsSubjectWriter
        from schemas.sink_cluster import NatsCluster
        from triggers.sinks import NatsSink

        async def nats_sink(subject: str, cluster: NatsCluster) -> EventSink:
            options = connect_options(cluster.auth) if cluster.auth is not None else {}
            nc = await self.rt.nats_client(list(cluster.servers), **options)
            return NatsSink(NatsSubjectWriter(nc, subject, timeout=PUSH_TIMEOUT))

        sink = await open_sink(trigger, "push", gateway=self.rt.gateway, kafka_producer=self.rt.kafka_producer_for,
                               nats_sink=nats_sink,
                               kafka_default=self.rt.config.kafka or os.environ.get(BOOTSTRAP_ENV),
                               nats_default=self.rt.nats_default(), http_timeout=PUSH_TIMEOUT)
        assert sink is not None and spec is trigger.spec.scaling.push
        return sink

    async def _route(self, request: web.Request) -> web.Response:
        """`GET /scaling/<namespace>/<name>`: the hint row, for KEDA's metrics-api scaler."""
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        if self.board.trigger(key) is None:
            return web.json_response({"error": "not_found", "message": f"trigger {key} is not run here"},
                                     status=404)
        hint = await self.board.current(key)
        if hint is None:
            return web.json_response({"error": "not_ready", "message": f"trigger {key}: lag not read yet"},
                                     status=503, headers={"Retry-After": "1"})
        return web.json_response(hint.row())
