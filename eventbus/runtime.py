"""The runtime: runs a set of triggers with shared clients, serves admin endpoints, stops gracefully."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from nats.aio.client import Client as NatsClient

from connectors.gateway import DEFAULT_URL_TEMPLATE, GatewayClient, UrlPolicy, display_url
from connectors.http_auth import PublisherAuth
from connectors.http_ingress import HttpIngress, IngressLimits
from connectors.kafka import BOOTSTRAP_ENV, KafkaConfigError, make_producer, resolve_bootstrap, security_settings
from connectors.nats_client import NatsConfigError, NatsUnreachable, connect_options
from connectors.nats_client import connect as nats_connect
from connectors.nats_client import resolve_servers as resolve_nats_servers
from eventbus.admin import admin_routes, start_admin
from eventbus.scaling_service import ScalingService
from eventbus.timer_loop import TimerLoop
from schemas.sink_cluster import KafkaCluster, NatsCluster, SinkClusterError, SinkRole
from schemas.trigger import Sasl, Tls, Trigger
from triggers.cancel import cancel_until_done
from triggers.delivery import Pipeline
from triggers.kafka_trigger import KafkaTrigger
from triggers.leader import SchedulerLock
from triggers.metrics import Metrics, default_metrics
from triggers.sinks import EventSink, GuardedSink, build_sink

log = logging.getLogger("eventbus.runtime")


class UnsupportedSource(RuntimeError):
    """The runtime has no controller for a trigger's source kind (yet)."""


class Controller(Protocol):
    """What the runtime needs of a source controller (Kafka, NATS, cron, HTTP)."""

    trigger: Trigger
    ready: asyncio.Event

    async def run(self, grace: float) -> None:
        """Run until `stop()`; then settle in-flight work within `grace` seconds and return."""

    def stop(self) -> None: ...


ControllerFactory = Callable[["Runtime", Trigger, Pipeline], Awaitable[Controller]]
"""Builds the controller of one trigger; registered per source kind in `CONTROLLERS`."""


async def _kafka_controller(rt: Runtime, trigger: Trigger, pipeline: Pipeline) -> Controller:
    return KafkaTrigger(trigger, pipeline, default_bootstrap=rt.config.kafka, client_id=rt.config.client_id)


async def _nats_controller(rt: Runtime, trigger: Trigger, pipeline: Pipeline) -> Controller:
    from connectors.nats_client import connect_options
    from triggers.nats_trigger import NatsTrigger

    src = trigger.spec.source.nats
    assert src is not None
    options = connect_options(src)  # built once: a missing secret fails here, naming the field

    async def connect() -> NatsClient:
        return await rt.nats_client(src.servers, **options)

    return NatsTrigger(trigger, pipeline, connect=connect)


async def _cron_controller(rt: Runtime, trigger: Trigger, pipeline: Pipeline) -> Controller:
    from eventbus.cron import cron_controller

    return await cron_controller(rt, trigger, pipeline)


CONTROLLERS: dict[str, ControllerFactory] = {"kafka": _kafka_controller, "nats": _nats_controller,
                                             "cron": _cron_controller}
"""Source kind -> controller factory (the runtime looks a trigger's source kind up here)."""


async def _http_controller(rt: Runtime, trigger: Trigger, pipeline: Pipeline) -> Controller:
    from eventbus.ingress import http_controller

    return await http_controller(rt, trigger, pipeline)


CONTROLLERS["http"] = _http_controller


@dataclass
class RuntimeConfig:
    gateway: str | None = None
    url_template: str = DEFAULT_URL_TEMPLATE
    kafka: str | None = None
    nats: str | None = None
    metrics_port: int | None = None
    http_port: int | None = None  # the HTTP ingress; None = start it on 8080 with the first HTTP trigger
    max_body: int = 1 << 20  # ingress request body limit (413 above; must be >= 64 KiB)
    http_max_in_flight: int = 1024  # ingress requests in flight before 429
    grace: float = 30.0
    client_id: str = "eventbus"
    timer_thread: bool = True  # run cron triggers on their own loop thread (see eventbus.timer_loop)
    http_host: str = "127.0.0.1"  # the ingress's bind address (`run --host`, default 0.0.0.0 there)
    publishers: PublisherAuth | None = None  # `--publishers`: bearer tokens for POST /topics
    ingress_limits: IngressLimits = field(default_factory=IngressLimits)  # header/body/rate/connection limits
    allow_url: tuple[str, ...] = ()  # `--allow-url`: SSRF guard rules for function and sink URLs
    keda_port: int | None = None  # serve KEDA's external scaler (gRPC) here; None = off
    scheduler_lock: Callable[[Trigger], Awaitable[SchedulerLock]] | None = None  # cron leases (Kubernetes)


TRANSIENT: tuple[type[BaseException], ...] = (KafkaError, NatsUnreachable, ConnectionError, OSError, TimeoutError)
"""Failures to reach a broker while starting a trigger: retried, not fatal."""

TIMER_KINDS = frozenset({"cron"})
"""Source kinds whose triggers run on the timer loop: their timing must not depend on dispatch load."""


@dataclass
class _Running:
    trigger: Trigger
    controller: Controller
    task: asyncio.Task[None]


@dataclass
class Runtime:
    """Owns the clients every trigger shares (gateway session, producers) and the trigger tasks."""

    config: RuntimeConfig
    metrics: Metrics = field(default_factory=default_metrics)

    def __post_init__(self) -> None:
        self.gateway = GatewayClient(self.config.gateway, url_template=self.config.url_template,
                                     url_policy=UrlPolicy.parse(self.config.allow_url))
        self._producers: dict[KafkaCluster, AIOKafkaProducer] = {}
        self._sinks: dict[str, list[GuardedSink]] = {}
        self.not_started: dict[str, str] = {}  # trigger key -> why (a sink that cannot be configured)
        self._nats: dict[tuple[str, ...], NatsClient] = {}
        self._nats_lock = asyncio.Lock()
        self._producer_lock = asyncio.Lock()
        self._running: dict[str, _Running] = {}
        self._admin: web.AppRunner | None = None
        self._stopped = asyncio.Event()
        self.extra_routes: list[web.RouteDef] = []
        self.ingress: HttpIngress | None = None  # see eventbus.ingress
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        self._timers: TimerLoop | None = None
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._timer_keys: set[str] = set()
        self.scaling = ScalingService(self)  # lag watchers and the scaling hint outputs
        self.draining = False  # set when stop begins: /readyz answers 503 from then on

    # --- shared clients -----------------------------------------------------------------------

    async def kafka_producer(self, servers: list[str], sasl: Sasl | None = None,
                             tls: Tls | None = None) -> AIOKafkaProducer:
        """The shared producer for `servers` (default: the runtime's `--kafka`) with this security."""
        return await self.kafka_producer_for(KafkaCluster(resolve_bootstrap(servers, self.config.kafka), sasl, tls))

    async def kafka_producer_for(self, cluster: KafkaCluster) -> AIOKafkaProducer:
        """One producer per (cluster, security), shared by every sink and publisher that writes there."""
        async with self._producer_lock:
            producer = self._producers.get(cluster)
            if producer is None:
                producer = make_producer(bootstrap=cluster.bootstrap,
                                         security=security_settings(cluster.sasl, cluster.tls))
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()  # else the failed producer leaks its client and tasks
                    raise
                self._producers[cluster] = producer
            return producer

    async def nats_client(self, servers: list[str] | None = None, **options: Any) -> NatsClient:
        """A shared NATS connection for `servers` (default: the runtime's `--nats` / embedded server)."""
        resolved = tuple(resolve_nats_servers(servers or [], self.config.nats))
        key = (*resolved, *sorted(f"{k}={v}" for k, v in options.items()))
        async with self._nats_lock:
            nc = self._nats.get(key)
            if nc is None or nc.is_closed:
                nc = await nats_connect(list(resolved), name=f"{self.config.client_id}", **options)
                self._nats[key] = nc
            return nc

    def nats_default(self) -> list[str]:
        """The runtime's default NATS servers (`--nats`, EVENTBUS_NATS_URL), [] when none."""
        try:
            return resolve_nats_servers([], self.config.nats)
        except NatsConfigError:
            return []

    async def _sink(self, trigger: Trigger, which: SinkRole) -> EventSink | None:
        """The trigger's dead-letter or reply sink on its cluster (see schemas.sink_cluster); a sink that
        cannot be configured raises SinkClusterError naming the field."""
        spec = getattr(trigger.spec.delivery, which)
        if spec is None:
            return None
        role = "dead-letter" if which == "dead_letter" else "reply"
        errors = self.metrics.sink_errors

        async def nats_sink(subject: str, cluster: NatsCluster) -> EventSink:
            from connectors.nats_publish import NatsSubjectWriter, dedupe_id
            from triggers.sinks import NatsSink

            options = connect_options(cluster.auth) if cluster.auth is not None else {}
            nc = await self.nats_client(list(cluster.servers), **options)
            return NatsSink(NatsSubjectWriter(nc, subject, msg_id=dedupe_id(f"{trigger.key}:{which}")))

        try:
            sink = await build_sink(
                trigger, which, gateway=self.gateway, kafka_producer=self.kafka_producer_for, nats_sink=nats_sink,
                kafka_default=self.config.kafka or os.environ.get(BOOTSTRAP_ENV), nats_default=self.nats_default(),
                count_error=lambda kind: errors.labels(trigger.key, role, kind).inc())
        except (KafkaConfigError, NatsConfigError) as exc:
            kind = "kafka" if spec.kafka is not None else "nats"
            field = "spec.delivery." + ("deadLetter" if which == "dead_letter" else "reply") + f".{kind}"
            raise SinkClusterError(trigger.key, field, str(exc)) from exc
        if sink is not None:
            self._sinks.setdefault(trigger.key, []).append(sink)
        return sink

    def degraded(self) -> dict[str, str]:
        """Triggers whose sink writes are failing (stalled, retrying), with the reason: `{key: reason}`."""
        out = {key: s.degraded for key, sinks in list(self._sinks.items()) for s in list(sinks)
               if s.degraded is not None}  # list(): the timer runtime is read from another thread
        if self._timers is not None and self._timers.runtime is not None:
            out.update(self._timers.runtime.degraded())
        return out

    # --- triggers -----------------------------------------------------------------------------

    async def add(self, trigger: Trigger) -> Controller:
        """Start one trigger; its task runs until `remove` or `stop`."""
        if trigger.key in self._running or trigger.key in self._timer_keys:
            raise ValueError(f"trigger {trigger.key} is already running")
        if self.config.timer_thread and trigger.spec.source.kind in TIMER_KINDS:
            if self._timers is None:
                self._timers = TimerLoop(self.config, self.metrics)
                await self._timers.start()
            controller = await self._timers.add(trigger)
            self._timer_keys.add(trigger.key)
            self.scaling.add(trigger, None)
            return controller
        pipeline = Pipeline(
            trigger,
            gateway=self.gateway,
            metrics=self.metrics.for_trigger(trigger.key),
            dead_letter=await self._sink(trigger, "dead_letter"),
            reply=await self._sink(trigger, "reply"),
        )
        kind = trigger.spec.source.kind
        factory = CONTROLLERS.get(kind)
        if factory is None:
            raise UnsupportedSource(f"{trigger.key}: spec.source.{kind} is not supported by this runtime yet")
        controller = await factory(self, trigger, pipeline)
        task = asyncio.create_task(self._supervise(controller), name=f"trigger:{trigger.key}")
        self._running[trigger.key] = _Running(trigger, controller, task)
        self.scaling.add(trigger, controller)
        log.info("trigger started", extra={"trigger": trigger.key, "source": kind, "url": display_url(pipeline.url)})
        return controller

    async def _supervise(self, controller: Controller) -> None:
        """Run a controller; restart it after a crash with backoff. Source drivers restart their own
        source (and report outages); this is the last line for a controller that raises anyway."""
        delay = 1.0
        while True:
            try:
                await controller.run(self.config.grace)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if controller.trigger.key not in self._running:
                    return
                log.error("trigger failed; restarting", extra={"trigger": controller.trigger.key,
                                                                "error": f"{type(exc).__name__}: {exc}",
                                                                "retry_in": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def remove(self, key: str) -> None:
        await self.scaling.remove(key)
        if key in self._timer_keys and self._timers is not None:
            self._timer_keys.discard(key)
            await self._timers.remove(key)
            return
        self._sinks.pop(key, None)
        running = self._running.pop(key, None)
        if running is None:
            return
        running.controller.stop()
        await running.task
        log.info("trigger stopped", extra={"trigger": key})

    async def add_or_retry(self, trigger: Trigger) -> None:
        """`add`, but a broker that cannot be reached yet (for a sink or the source) is retried in the
        background with backoff, logged each time; the other triggers and the runtime keep running.
        Configuration errors (a missing secret, no bootstrap servers) still fail at once."""
        try:
            await self.add(trigger)
        except SinkClusterError as exc:  # this trigger cannot run as written; the others can
            self._sinks.pop(trigger.key, None)
            self.not_started[trigger.key] = str(exc)
            log.error("trigger not started: its sink cannot be configured",
                      extra={"trigger": trigger.key, "field": exc.field, "error": str(exc)})
        except TRANSIENT as exc:
            self._sinks.pop(trigger.key, None)
            self._log_unreachable(trigger, exc, 1.0)
            task = asyncio.create_task(self._retry_add(trigger), name=f"pending:{trigger.key}")
            self._pending[trigger.key] = task

    async def _retry_add(self, trigger: Trigger) -> None:
        delay = 1.0
        try:
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                try:
                    await self.add(trigger)
                    log.info("trigger started after its broker became reachable", extra={"trigger": trigger.key})
                    return
                except TRANSIENT as exc:
                    self._sinks.pop(trigger.key, None)
                    self._log_unreachable(trigger, exc, delay)
                except SinkClusterError as exc:
                    self._sinks.pop(trigger.key, None)
                    self.not_started[trigger.key] = str(exc)
                    log.error("trigger not started: its sink cannot be configured",
                              extra={"trigger": trigger.key, "field": exc.field, "error": str(exc)})
                    return
        finally:
            self._pending.pop(trigger.key, None)

    @staticmethod
    def _log_unreachable(trigger: Trigger, exc: BaseException, retry_in: float) -> None:
        log.error("cannot start trigger: broker unreachable; retrying",
                  extra={"trigger": trigger.key, "error": f"{type(exc).__name__}: {exc}", "retry_in": retry_in})

    def ready(self) -> bool:
        """True only while not draining, no trigger is pending (its broker unreachable at start), and
        every trigger runs and says it is ready (drivers clear it during outages and restarts)."""
        if self.draining:
            return False
        timers_ok = self._timers is None or self._timers.ready()
        return (timers_ok and not self._pending
                and all(r.controller.ready.is_set() and not r.task.done() for r in self._running.values()))

    def readiness(self) -> dict[str, Any]:
        """Why `ready()` says what it says: triggers not running yet (`pending`, `notReady`), refused at start
        (`notStarted`), and running but `degraded` (a sink failing for good: stalled, nothing lost)."""
        not_ready = sorted(k for k, r in self._running.items() if not r.controller.ready.is_set() or r.task.done())
        return {"draining": self.draining, "pending": sorted(self._pending), "notReady": not_ready,
                "notStarted": dict(self.not_started), "degraded": self.degraded()}

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, triggers: list[Trigger]) -> None:
        await self.gateway.start()
        await self.scaling.start()
        if self.config.metrics_port is not None:
            routes = [*admin_routes(self.ready, details=self.readiness), *self.extra_routes]
            self._admin = await start_admin(self.config.metrics_port, routes)
        if self.config.http_port is not None:
            from eventbus.ingress import ensure_ingress

            await ensure_ingress(self)
        for t in triggers:
            await self.add_or_retry(t)
        # Everything allocated so far (modules, models, clients) lives as long as the process: move it out
        # of the collector's reach. A full collection otherwise walks it all while holding the GIL, which
        # was measured at 50-65 ms here: a stall of every loop, the cron timer loop included.
        gc.freeze()

    def abandoned(self) -> int:
        """Events a stop abandoned unsettled after the grace period (the timer loop's included)."""
        return self.metrics.abandoned

    def in_flight(self) -> int:
        """Events dispatched but not settled, over every trigger (the timer loop's included; any thread)."""
        return self.metrics.in_flight()

    async def stop(self) -> None:
        """Stop fetching everywhere, let in-flight events finish within the grace period, commit, close.

        Bounded: triggers (main and timer loop, concurrently) get the grace period plus STOP_MARGIN; a
        trigger still running then is cancelled (its unsettled events are redelivered later), and closing
        the shared clients gets CLOSE_TIMEOUT each."""
        self.draining = True
        grace = self.config.grace
        await _bounded(self.scaling.stop(), "scaling service stop")
        await cancel_until_done(*self._pending.values())
        supervisors = [r.task for r in self._running.values()]
        stopping = [asyncio.create_task(self.remove(k)) for k in list(self._running)]
        if self._timers is not None:
            self._timer_keys.clear()
            timers, self._timers = self._timers, None
            stopping.append(asyncio.create_task(timers.stop(grace + STOP_MARGIN)))
        if stopping:
            _, late = await asyncio.wait(stopping, timeout=grace + STOP_MARGIN)
            if late:
                log.warning("triggers still running after the grace period: cancelled (their unsettled "
                            "events will be redelivered)", extra={"count": len(late)})
                await cancel_until_done(*late, *supervisors)
        for hook in self.on_stop:
            await _bounded(hook(), "stop hook")
        for producer in self._producers.values():
            await _bounded(producer.stop(), "Kafka producer stop")
        self._producers.clear()
        for nc in self._nats.values():
            if not nc.is_closed:
                await _bounded(nc.drain(), "NATS drain")
        self._nats.clear()
        await _bounded(self.gateway.close(), "gateway session close")
        if self._admin is not None:
            await _bounded(self._admin.cleanup(), "admin server stop")
        self._stopped.set()

    async def run_until_signal(self, triggers: list[Trigger]) -> None:
        """Start, then stop on SIGTERM or SIGINT, at any moment, startup included: exit 0 within the grace
        period plus 2 s (see eventbus.shutdown). A fatal startup error is raised after stopping."""
        from eventbus.shutdown import serve_until_signal

        await serve_until_signal("eventbus run", lambda: self.start(triggers), self.stop,
                                 grace=self.config.grace, in_flight=self.in_flight, abandoned=self.abandoned)


STOP_MARGIN = 0.5
"""Seconds past the grace period that stopping triggers may take before they are cancelled."""
CLOSE_TIMEOUT = 1.0


async def _bounded(aw: Awaitable[None], what: str) -> None:
    """Await a closing step for at most CLOSE_TIMEOUT: a client that hangs on close must not hold the exit."""
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=CLOSE_TIMEOUT)
    if not done:
        log.warning(f"{what} did not finish in {CLOSE_TIMEOUT:g}s; going on")
        await cancel_until_done(task)
    elif not task.cancelled() and task.exception() is not None:
        log.warning(f"{what} failed", extra={"error": repr(task.exception())})
