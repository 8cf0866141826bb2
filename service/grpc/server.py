"""The gRPC adapter: lmroute.v1.Router over RoutingEngine, plus health, reflection and metrics."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from service.batching import BatcherClosedError, DeadlineExceededError, QueueFullError
from service.config import Config
from service.engine import Decision, InvalidRequestError, RouteInput, RoutingEngine
from service.errors import LmrouteError
from service.event_loop import running_loop_name
from service.grpc.gen.lmroute.v1 import router_pb2, router_pb2_grpc
from service.metrics import Metrics

log = structlog.get_logger(__name__)
SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["Router"].full_name
_STATUS = (
    (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (BatcherClosedError, grpc.StatusCode.UNAVAILABLE),
)


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def to_input(req: router_pb2.RouteRequest) -> RouteInput:
    return RouteInput(
        prompt=req.prompt,
        messages=[(m.role, m.content) for m in req.messages],
        router=req.router,
        threshold=req.threshold if req.HasField("threshold") else None,
        strong_fraction=req.strong_fraction if req.HasField("strong_fraction") else None,
        strong_model=req.strong_model,
        weak_model=req.weak_model,
        labels=dict(req.labels),
        request_id=req.request_id,
    )


def to_response(d: Decision) -> router_pb2.RouteResponse:
    return router_pb2.RouteResponse(
        model=d.model,
        strong=d.strong,
        strong_win_rate=d.strong_win_rate,
        threshold=d.threshold,
        router=d.router,
        cached=d.cached,
        request_id=d.request_id,
        reason=d.reason,
    )


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, engine: RoutingEngine) -> None:
        self.engine = engine
        self.metrics = engine.metrics
        self.limits = engine.config.limits

    @contextmanager
    def _rpc(self, name: str):
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            yield
        except _Abort as exc:
            code = exc.code
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            self.metrics.requests.labels(name, code.name).inc()
            self.metrics.request_seconds.labels(name).observe(time.perf_counter() - started)

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else asyncio.get_running_loop().time() + remaining

    def _check_size(self, req: router_pb2.RouteRequest) -> None:
        size = req.ByteSize()
        if size > self.limits.max_request_bytes:
            raise InvalidRequestError(
                f"request is {size} bytes; the limit is {self.limits.max_request_bytes} "
                "(longer text within the limit is truncated to the model's max tokens)"
            )

    async def _call(self, rpc: str, context, work):
        with self._rpc(rpc):
            try:
                return await work()
            except LmrouteError as exc:
                code = next((c for cls, c in _STATUS if isinstance(exc, cls)), grpc.StatusCode.INTERNAL)
                raise _Abort(code, str(exc)) from exc

    async def Route(self, request, context):  # noqa: N802 - gRPC method name
        async def work():
            self._check_size(request)
            started = time.perf_counter()
            decision = await self.engine.route(to_input(request), self._deadline(context))
            self._log(decision, started)
            return to_response(decision)

        return await self._guard(context, "Route", work)

    async def RouteBatch(self, request, context):  # noqa: N802
        async def work():
            if len(request.requests) > self.limits.max_batch_requests:
                raise InvalidRequestError(
                    f"at most {self.limits.max_batch_requests} requests per RouteBatch, "
                    f"got {len(request.requests)}"
                )
            for item in request.requests:
                self._check_size(item)
            started = time.perf_counter()
            inputs = [to_input(r) for r in request.requests]
            decisions = await self.engine.route_many(inputs, self._deadline(context))
            for d in decisions:
                self._log(d, started)
            return router_pb2.RouteBatchResponse(responses=[to_response(d) for d in decisions])

        return await self._guard(context, "RouteBatch", work)

    async def ListRouters(self, request, context):  # noqa: N802
        async def work():
            infos = []
            for name in self.engine.router_names:
                slot = self.engine.slot(name)
                router = slot.router
                manifest = router.manifest if slot.batcher is not None else None
                table = slot.calibration or {"strong_fraction": [], "threshold": []}
                infos.append(
                    router_pb2.RouterInfo(
                        name=name,
                        kind=getattr(router, "kind", "") or "random",
                        artifact_version=manifest.version if manifest else "",
                        artifact_hash=router.artifact_hash,
                        models=list(getattr(router, "models", [])),
                        default_strong_model=slot.strong,
                        default_weak_model=slot.weak,
                        default_threshold=slot.default_threshold,
                        calibration=[
                            router_pb2.CalibrationPoint(strong_fraction=f, threshold=t)
                            for f, t in zip(table["strong_fraction"], table["threshold"], strict=True)
                        ],
                        provider=getattr(router, "provider", "none"),
                    )
                )
            return router_pb2.ListRoutersResponse(routers=infos)

        return await self._guard(context, "ListRouters", work)

    async def _guard(self, context, rpc: str, work):
        try:
            return await self._call(rpc, context, work)
        except _Abort as exc:
            await context.abort(exc.code, str(exc))

    def _log(self, d: Decision, started: float) -> None:
        # debug only, and never the prompt text
        log.debug(
            "route",
            request_id=d.request_id,
            router=d.router,
            model=d.model,
            strong=d.strong,
            score=round(d.strong_win_rate, 6),
            reason=d.reason,
            cached=d.cached,
            batch_size=d.batch_size,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )


class RouteServer:
    """Owns the engine, the gRPC server, health and the metrics endpoint."""

    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.engine = RoutingEngine(config, metrics)
        self.health = HealthServicer()
        self.port: int | None = None
        self.metrics_port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._metrics_http = None

    async def start(self) -> int:
        limit = self.config.limits.max_request_bytes
        # a RouteBatch may carry many requests; each one is checked against the limit itself
        receive = max(4 << 20, 8 * limit)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", receive),
                ("grpc.max_send_message_length", 64 << 20),
            ]
        )
        router_pb2_grpc.add_RouterServicer_to_server(RouterServicer(self.engine), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = server.add_insecure_port(f"{self.config.server.host}:{self.config.server.port}")
        if self.config.server.metrics_port is not None:
            self._start_metrics()
        await server.start()
        self._server = server
        # NOT_SERVING until every configured router is loaded and warmed up
        try:
            await self.engine.start()
        except BaseException:
            # close the port inside the event loop: left to garbage collection after the loop
            # has closed, grpc's server object prints a traceback over the real error
            await server.stop(None)
            if self._metrics_http is not None:
                self._metrics_http.shutdown()
            raise
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "server_started",
            port=self.port,
            metrics_port=self.metrics_port,
            grace_seconds=self.config.server.grace_seconds,
            event_loop=running_loop_name(),
        )
        return self.port

    def _start_metrics(self) -> None:
        if self.config.server.metrics_port == 0 and self.config.server.port != 0:
            return  # 0 disables metrics, except in tests (port 0 everywhere: pick a free one)
        server, _thread = start_http_server(
            self.config.server.metrics_port,
            addr=self.config.server.host,
            registry=self.engine.metrics.registry,
        )
        self._metrics_http = server
        self.metrics_port = server.server_port

    async def _set_health(self, status) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, let in-flight ones finish within the grace."""
        grace = self.config.server.grace_seconds if grace is None else grace
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._server is not None:
            await self._server.stop(grace)
        await self.engine.close(timeout=grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
        log.info("server_stopped")

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve_until_signalled(config: Config, on_ready: Callable[[], None] | None = None) -> None:
    """Run a RouteServer until SIGTERM/SIGINT, then stop it gracefully; `on_ready` runs once
    it serves (every router loaded and warm)."""
    server = RouteServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    if on_ready is not None:
        on_ready()
    await stop.wait()
    await server.stop()
