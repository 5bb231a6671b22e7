"""KEDA's external scaler (gRPC, `eventbus run --keda-port N`), answering from the hint board.

The ScaledObject names the trigger in its `scalerMetadata` (`triggerNamespace`, `triggerName`); an unknown
trigger answers NOT_FOUND with its name. The metric's target is the trigger's `lagThreshold` and its value
the lag capped so that the HPA's `ceil(value / target)` is eventbus's `desiredReplicas`. `StreamIsActive`
sends the current state when the stream opens, then every change, as the board reports it (event-driven).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
from grpc import aio

from eventbus import externalscaler_pb2 as pb
from eventbus import externalscaler_pb2_grpc as pb_grpc
from schemas.trigger import Trigger
from triggers.hint_board import HintBoard
from triggers.scaling import Hint, metric_value

log = logging.getLogger("eventbus.keda")

NAMESPACE_KEY = "triggerNamespace"
NAME_KEY = "triggerName"


def metric_name(trigger: Trigger) -> str:
    """`eventbus-<namespace>-<name>-lag`: the one metric of a trigger."""
    return f"eventbus-{trigger.metadata.namespace}-{trigger.metadata.name}-lag"


class ExternalScaler(pb_grpc.ExternalScalerServicer):
    """The `externalscaler.ExternalScaler` service over a `HintBoard`."""

    def __init__(self, board: HintBoard) -> None:
        self.board = board

    async def _lookup(self, ref: pb.ScaledObjectRef, context: aio.ServicerContext) -> tuple[str, Trigger]:
        md = dict(ref.scalerMetadata)
        ns, name = md.get(NAMESPACE_KEY, ""), md.get(NAME_KEY, "")
        if not name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"scalerMetadata.{NAME_KEY} is required (and {NAMESPACE_KEY}, default 'default')")
        key = f"{ns or 'default'}/{name}"
        trigger = self.board.trigger(key)
        if trigger is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"trigger {key} is not run by this eventbus")
        assert trigger is not None
        return key, trigger

    async def _hint(self, key: str, context: aio.ServicerContext) -> Hint:
        hint = await self.board.current(key)
        if hint is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"trigger {key}: lag not read yet")
        assert hint is not None
        return hint

    async def IsActive(self, request: pb.ScaledObjectRef, context: aio.ServicerContext) -> pb.IsActiveResponse:
        key, _ = await self._lookup(request, context)
        return pb.IsActiveResponse(result=(await self._hint(key, context)).active)

    async def StreamIsActive(self, request: pb.ScaledObjectRef,
                             context: aio.ServicerContext) -> AsyncIterator[pb.IsActiveResponse]:
        key, _ = await self._lookup(request, context)
        queue = self.board.subscribe(key)
        if queue is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"trigger {key} is not run by this eventbus")
            return
        try:
            hint = await self.board.current(key)
            last = hint is not None and hint.active
            yield pb.IsActiveResponse(result=last)
            while True:
                hint = await queue.get()
                if hint.active != last:
                    last = hint.active
                    yield pb.IsActiveResponse(result=last)
        finally:
            self.board.unsubscribe(key, queue)

    async def GetMetricSpec(self, request: pb.ScaledObjectRef,
                            context: aio.ServicerContext) -> pb.GetMetricSpecResponse:
        _, trigger = await self._lookup(request, context)
        return _spec(trigger)

    async def StreamMetricSpec(self, request: pb.ScaledObjectRef,
                               context: aio.ServicerContext) -> AsyncIterator[pb.GetMetricSpecResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "StreamMetricSpec: the target (lagThreshold) changes only with the Trigger")
        yield pb.GetMetricSpecResponse()  # pragma: no cover  (makes this an async generator)

    async def GetMetrics(self, request: pb.GetMetricsRequest, context: aio.ServicerContext) -> pb.GetMetricsResponse:
        key, trigger = await self._lookup(request.scaledObjectRef, context)
        hint = await self._hint(key, context)
        value = metric_value(hint, trigger.spec.scaling)
        return pb.GetMetricsResponse(metricValues=[pb.MetricValue(
            metricName=request.metricName or metric_name(trigger), metricValue=int(value), metricValueFloat=value)])


def _spec(trigger: Trigger) -> pb.GetMetricSpecResponse:
    threshold = trigger.spec.scaling.lag_threshold
    return pb.GetMetricSpecResponse(metricSpecs=[pb.MetricSpec(
        metricName=metric_name(trigger), targetSize=threshold, targetSizeFloat=float(threshold))])


async def start_keda(board: HintBoard, port: int, host: str = "0.0.0.0") -> aio.Server:
    """Serve the external scaler on `host:port`; returns the started server (`await server.stop(grace)`)."""
    server = aio.server()
    pb_grpc.add_ExternalScalerServicer_to_server(ExternalScaler(board), server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"--keda-port {port}: cannot listen on {host}:{port}")
    await server.start()
    log.info("KEDA external scaler serving", extra={"port": bound})
    return server
