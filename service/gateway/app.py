"""The gateway's HTTP layer: OpenAI-compatible endpoints over the Route RPC and backend pools.

POST /v1/chat/completions  `model` = router-<router>-<threshold> | router-<router>-p<pct> routes;
                           a backend model name passes straight through. Streaming is piped.
POST /v1/route             the routing decision alone (same `model` and `messages`), for a
                           sidecar next to an existing LLM gateway: which tier, which model
GET  /v1/models, /health, /metrics
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import grpc
import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from service.event_loop import running_loop_name
from service.gateway.backends import Endpoint, TierPool
from service.gateway.config import GatewayConfig
from service.grpc.gen.lmroute.v1 import router_pb2, router_pb2_grpc
from service.metrics import LATENCY_BUCKETS
from service.policy.messages import routed_text
from service.policy.model_string import RoutingError, is_router_model, parse_router_model

log = structlog.get_logger(__name__)
LABEL_HEADER = "x-lmroute-label-"
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def openai_error(status: int, message: str, code: str, kind: str = "invalid_request_error") -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": code, "param": None}}
    return web.json_response(body, status=status)


async def json_object(request: web.Request) -> dict | web.Response:
    """The request body as a JSON object, or the 400 answer saying why it is not one."""
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
    except (json.JSONDecodeError, ValueError, UnicodeDecodeError) as exc:
        return openai_error(400, f"invalid JSON body: {exc}", "invalid_json")
    return body


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "lmroute_gateway_requests",
            "Chat completions by served model and status",
            ["model", "status"],
            registry=r,
        )
        self.upstream = Histogram(
            "lmroute_gateway_upstream_seconds",
            "Backend latency",
            ["tier"],
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "lmroute_gateway_overhead_seconds",
            "Gateway time before the backend call (auth, parsing, routing)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.failovers = Counter(
            "lmroute_gateway_failovers", "Retries on another endpoint or tier", ["tier", "kind"], registry=r
        )
        self.fallbacks = Counter(
            "lmroute_gateway_router_fallbacks",
            "Decisions made without the router service",
            ["reason"],
            registry=r,
        )


class Gateway:
    def __init__(self, config: GatewayConfig, metrics: GatewayMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        self.pools = {
            name: TierPool(name, config.tier(name), config.failures_before_cooldown, config.cooldown_s)
            for name in ("strong", "weak")
        }
        self._keys = {k.value(): dict(k.labels) for k in config.keys}
        self._label_headers = {h.lower() for h in config.label_headers}
        self._session: aiohttp.ClientSession | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stub: router_pb2_grpc.RouterStub | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/route", self.route)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_endpoint)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _: web.Application) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        self._channel = grpc.aio.insecure_channel(self.config.router_address)
        self._stub = router_pb2_grpc.RouterStub(self._channel)
        log.info(
            "gateway_started",
            router_address=self.config.router_address,
            strong=self.pools["strong"].model,
            weak=self.pools["weak"].model,
            endpoints={n: len(p.endpoints) for n, p in self.pools.items()},
            auth=bool(self._keys),
            event_loop=running_loop_name(),
        )

    async def _cleanup(self, _: web.Application) -> None:
        if self._session:
            await self._session.close()
        if self._channel:
            await self._channel.close()

    # -- endpoints --------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            if admitted.status == 401:
                self.metrics.requests.labels("", "401").inc()
            return admitted
        labels, body = admitted
        model = body.get("model")
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        headers = {"x-lmroute-request-id": request_id}
        if not isinstance(model, str) or not model:
            return openai_error(400, "model is required", "invalid_model")
        if is_router_model(model):
            try:
                decision = await self._route(model, body, labels, request_id)
            except RoutingError as exc:
                self.metrics.requests.labels(model, "400").inc()
                return openai_error(400, str(exc), "invalid_model")
            tier, router_headers = decision
            headers.update(router_headers)
        else:
            tier = next((name for name, pool in self.pools.items() if pool.model == model), None)
            if tier is None:
                self.metrics.requests.labels(model, "404").inc()
                known = ", ".join(p.model for p in self.pools.values())
                return openai_error(
                    404,
                    f"model {model!r} not found; use router-<router>-<threshold> or one of: {known}",
                    "model_not_found",
                )
            headers["x-lmroute-router"] = "none"
        self.metrics.overhead.observe(time.perf_counter() - started)
        return await self._forward(request, body, tier, headers)

    async def route(self, request: web.Request) -> web.Response:
        """The decision without the backend call: {tier, model, router, strong_win_rate, ...}."""
        admitted = await self._admit(request)
        if isinstance(admitted, web.Response):
            return admitted
        labels, body = admitted
        model = body.get("model")
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        if not isinstance(model, str) or not is_router_model(model):
            return openai_error(400, "model must be router-<router>-<threshold> or -p<pct>", "invalid_model")
        try:
            tier, headers = await self._route(model, body, labels, request_id)
        except RoutingError as exc:
            return openai_error(400, str(exc), "invalid_model")
        score = headers.get("x-lmroute-score")
        threshold = headers.get("x-lmroute-threshold")
        return web.json_response(
            {
                "request_id": request_id,
                "tier": tier,
                "model": self.pools[tier].model,
                "router": headers.get("x-lmroute-router"),
                "strong_win_rate": float(score) if score is not None else None,
                "threshold": float(threshold) if threshold is not None else None,
                "reason": headers.get("x-lmroute-reason"),
            },
            headers={"x-lmroute-request-id": request_id},
        )

    async def models(self, _: web.Request) -> web.Response:
        data = []
        try:
            reply = await self._stub.ListRouters(
                router_pb2.ListRoutersRequest(), timeout=self.config.router_timeout_s
            )
            for r in reply.routers:
                data.append(
                    {
                        "id": f"router-{r.name}-{round(r.default_threshold, 5)}",
                        "object": "model",
                        "owned_by": "lmroute",
                    }
                )
                if r.calibration:
                    data.append({"id": f"router-{r.name}-p50", "object": "model", "owned_by": "lmroute"})
        except grpc.aio.AioRpcError as exc:
            log.warning("list_routers_failed", code=exc.code().name)
        for pool in self.pools.values():
            data.append({"id": pool.model, "object": "model", "owned_by": f"backend:{pool.name}"})
        return web.json_response({"object": "list", "data": data})

    async def health(self, _: web.Request) -> web.Response:
        router = "down"
        try:
            await self._stub.ListRouters(
                router_pb2.ListRoutersRequest(), timeout=self.config.router_timeout_s
            )
            router = "up"
        except grpc.aio.AioRpcError:
            pass
        # the gateway still answers without the router (fallback tier), so it stays healthy
        return web.json_response({"status": "ok", "router": router})

    async def metrics_endpoint(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # -- steps ------------------------------------------------------------------------------
    async def _admit(self, request: web.Request) -> tuple[dict[str, str], dict] | web.Response:
        """(caller labels, JSON body), or the 401/400 answer for a refused key or a bad body."""
        labels = self._authenticate(request)
        if labels is None:
            return openai_error(401, "Incorrect or missing API key.", "invalid_api_key")
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        return labels, body

    def _authenticate(self, request: web.Request) -> dict[str, str] | None:
        """Labels for this caller (key labels + allow-listed label headers), or None if refused."""
        labels: dict[str, str] = {}
        if self._keys:
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if key not in self._keys:
                return None
            labels.update(self._keys[key])
        for header, value in request.headers.items():
            name = header.lower()
            if name.startswith(LABEL_HEADER) and name[len(LABEL_HEADER) :] in self._label_headers:
                labels.setdefault(name[len(LABEL_HEADER) :], value)  # a key's labels win over headers
        return labels

    async def _route(self, model: str, body: dict, labels: dict[str, str], request_id: str):
        parsed = parse_router_model(model)
        text = routed_text(body.get("messages"), self.config.route_on)
        rpc = router_pb2.RouteRequest(prompt=text, router=parsed.router, labels=labels, request_id=request_id)
        if parsed.threshold is not None:
            rpc.threshold = parsed.threshold
        else:
            rpc.strong_fraction = parsed.strong_fraction
        try:
            reply = await self._stub.Route(rpc, timeout=self.config.router_timeout_s)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise RoutingError(exc.details()) from exc
            reason = f"fallback:router_{exc.code().name.lower()}"
            self.metrics.fallbacks.labels(reason).inc()
            log.warning("router_unavailable_fallback", request_id=request_id, code=exc.code().name)
            tier = self.config.fallback_tier
            return tier, {"x-lmroute-router": parsed.router, "x-lmroute-reason": reason}
        tier = "strong" if reply.strong else "weak"
        return tier, {
            "x-lmroute-router": reply.router,
            "x-lmroute-score": f"{reply.strong_win_rate:.6f}",
            "x-lmroute-threshold": f"{reply.threshold:.6f}",
            "x-lmroute-reason": reply.reason,
        }

    async def _forward(
        self, request: web.Request, body: dict, tier: str, headers: dict
    ) -> web.StreamResponse:
        tiers = [tier]
        if self.config.failover_to_other_tier:
            tiers.append("weak" if tier == "strong" else "strong")
        stream = bool(body.get("stream"))
        for position, name in enumerate(tiers):
            pool = self.pools[name]
            if position:
                self.metrics.failovers.labels(name, "tier").inc()
            for attempt, endpoint in enumerate(pool.candidates()):
                if attempt:
                    self.metrics.failovers.labels(name, "endpoint").inc()
                response = await self._try(
                    request,
                    pool,
                    endpoint,
                    {**body, "model": pool.model},
                    stream,
                    {**headers, "x-lmroute-model": pool.model},
                )
                if response is not None:
                    return response
        self.metrics.requests.labels(body.get("model", ""), "502").inc()
        return openai_error(502, "every backend endpoint failed", "upstream_unavailable", kind="api_error")

    async def _try(
        self, request, pool: TierPool, endpoint: Endpoint, payload: dict, stream: bool, headers: dict
    ):
        """One attempt; None means try the next endpoint (connect error, timeout or 5xx)."""
        upstream_headers = {"Content-Type": "application/json"}
        key = endpoint.config.api_key()
        if key:
            upstream_headers["Authorization"] = f"Bearer {key}"
        timeout = aiohttp.ClientTimeout(total=endpoint.config.timeout_s)
        started = time.perf_counter()
        response: web.StreamResponse | None = None  # set once bytes went to the client
        endpoint.in_flight += 1
        try:
            async with self._session.post(
                endpoint.url, json=payload, headers=upstream_headers, timeout=timeout
            ) as upstream:
                if upstream.status >= 500:
                    pool.failed(endpoint)
                    log.warning(
                        "backend_failed", tier=pool.name, status=upstream.status, url=endpoint.config.base_url
                    )
                    return None
                pool.succeeded(endpoint)
                if not stream or upstream.status >= 400:
                    data = await upstream.read()
                    self._done(pool, payload, upstream.status, started)
                    return web.Response(
                        body=data,
                        status=upstream.status,
                        headers={
                            **headers,
                            "Content-Type": upstream.headers.get("Content-Type", "application/json"),
                        },
                    )
                response = web.StreamResponse(
                    status=upstream.status,
                    headers={
                        **headers,
                        "Content-Type": upstream.headers.get("Content-Type", "text/event-stream"),
                        "Cache-Control": "no-cache",
                    },
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():  # pass SSE through as it arrives
                    await response.write(chunk)
                await response.write_eof()
                self._done(pool, payload, upstream.status, started)
                return response
        except (aiohttp.ClientError, TimeoutError) as exc:
            pool.failed(endpoint)
            log.warning(
                "backend_unreachable", tier=pool.name, url=endpoint.config.base_url, error=type(exc).__name__
            )
            return None
        finally:
            endpoint.in_flight -= 1

    def _done(self, pool: TierPool, payload: dict, status: int, started: float) -> None:
        self.metrics.upstream.labels(pool.name).observe(time.perf_counter() - started)
        self.metrics.requests.labels(pool.model, str(status)).inc()


async def run_gateway(config: GatewayConfig, stop: asyncio.Event) -> None:
    """Serve until `stop` is set (the CLI sets it on SIGTERM/SIGINT)."""
    runner = web.AppRunner(Gateway(config).app())
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    await stop.wait()
    await runner.cleanup()
