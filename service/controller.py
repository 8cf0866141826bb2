"""The in-process Python SDK, RouteLLM-compatible: route each chat call to a strong or a weak model.

    client = Controller(routers=["mf"], strong_model="gpt-4-1106-preview",
                        weak_model="mixtral-8x7b-instruct-v0.1", api_base="http://host/v1")
    client.chat.completions.create(model="router-mf-0.11593", messages=[...])

Prompts are scored in-process (`service.routers.load_router`) or, with `router_address`, by a
running lmroute service over gRPC; the chosen model is then called with the `openai` SDK.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from service.errors import InvalidThresholdError, LmrouteError, UnknownModelError
from service.policy.calibration import threshold_for_fraction
from service.policy.messages import routed_text
from service.policy.model_string import RouterModel, RoutingError, parse_router_model
from service.routers import ROUTER_NAMES, MFRouter, RandomRouter, check_threshold, load_router

__all__ = ["Controller", "LmrouteError", "RoutingError"]

log = structlog.get_logger(__name__)
CHUNK = 256  # prompts per scoring call / RouteBatch in batch_calculate_win_rate
MAX_BATCH_BYTES = 2 << 20
_CONFIG_KEYS = frozenset({"checkpoint_path", "artifact_dir", "seed"})


def _valid_threshold(threshold: float) -> float:
    try:
        return check_threshold(threshold)
    except InvalidThresholdError as exc:
        raise RoutingError(str(exc)) from None


class _Progress:
    """A minimal progress line on stderr (no extra dependency)."""

    def __init__(self, total: int, label: str, enabled: bool) -> None:
        self.total, self.label, self.enabled, self.done = total, label, enabled, 0

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled:
            end = "\n" if self.done >= self.total else ""
            sys.stderr.write(f"\r{self.label}: {self.done}/{self.total}{end}")
            sys.stderr.flush()


class _LocalScorer:
    """Routers loaded in this process, once each."""

    def __init__(
        self, routers: list[str], config: Mapping[str, Mapping[str, Any]], pair: tuple[str, str]
    ) -> None:
        self.pair = pair
        self.routers: dict[str, Any] = {}
        self._locks: dict[str, threading.Lock] = {}
        for name in routers:
            options = dict(config.get(name) or {})
            unknown = sorted(set(options) - _CONFIG_KEYS)
            if unknown:
                log.warning("controller_config_ignored", router=name, keys=unknown)
            artifact = options.get("checkpoint_path") or options.get("artifact_dir")
            if name not in ROUTER_NAMES and not artifact:
                raise RoutingError(
                    f"unknown router {name!r}; available routers: {', '.join(ROUTER_NAMES)} "
                    "(or give config[name]['checkpoint_path'], an exported router folder)"
                )
            router = load_router(name, Path(artifact) if artifact else None, seed=options.get("seed"))
            if isinstance(router, MFRouter):
                try:
                    for model in pair:
                        router.canonical(model)
                except UnknownModelError as exc:
                    raise RoutingError(f"router {name!r}: {exc}") from None
            self.routers[name] = router
            self._locks[name] = threading.Lock()

    def threshold(self, name: str, spec: RouterModel) -> float:
        if spec.threshold is not None:
            return spec.threshold
        router = self.routers[name]
        if isinstance(router, RandomRouter):
            return 1.0 - spec.strong_fraction  # uniform scores
        return threshold_for_fraction(router.manifest.calibration, spec.strong_fraction)

    def scores(self, name: str, prompts: Sequence[str]) -> np.ndarray:
        router = self.routers[name]
        if isinstance(router, RandomRouter):
            with self._locks[name]:  # its generator is not thread-safe
                return router.score(prompts, *self.pair)
        return np.asarray(router.score(prompts, *self.pair), dtype=np.float64)

    def decide(self, name: str, prompt: str, spec: RouterModel) -> tuple[bool, float, float]:
        threshold = self.threshold(name, spec)
        score = float(self.scores(name, [prompt])[0])
        return score >= threshold, score, threshold

    def close(self) -> None:
        pass


class _RemoteScorer:
    """Scores through a running lmroute service's Route / RouteBatch RPCs."""

    def __init__(self, address: str, routers: list[str], pair: tuple[str, str], timeout: float) -> None:
        import grpc

        from service.grpc.gen.lmroute.v1 import router_pb2, router_pb2_grpc

        self._grpc, self._pb = grpc, router_pb2
        self.address, self.pair, self.timeout = address, pair, timeout
        self.channel = grpc.insecure_channel(address)
        self.stub = router_pb2_grpc.RouterStub(self.channel)
        try:
            reply = self._call(self.stub.ListRouters, router_pb2.ListRoutersRequest())
            served = [info.name for info in reply.routers]
            for name in routers:
                if name not in served:
                    raise RoutingError(
                        f"unknown router {name!r}; available routers at {address}: {', '.join(served)}"
                    )
        except LmrouteError:
            self.close()
            raise

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as exc:
            code, details = exc.code(), exc.details()
            if code == self._grpc.StatusCode.INVALID_ARGUMENT:
                raise RoutingError(details) from None
            name = code.name if code is not None else "UNKNOWN"
            raise LmrouteError(f"router service at {self.address} failed: {name}: {details}") from None

    def _request(self, name: str, prompt: str, spec: RouterModel):
        kwargs: dict[str, Any] = {"threshold": spec.threshold}
        if spec.threshold is None:
            kwargs = {"strong_fraction": spec.strong_fraction}
        return self._pb.RouteRequest(
            prompt=prompt, router=name, strong_model=self.pair[0], weak_model=self.pair[1], **kwargs
        )

    def decide(self, name: str, prompt: str, spec: RouterModel) -> tuple[bool, float, float]:
        reply = self._call(self.stub.Route, self._request(name, prompt, spec))
        return reply.strong, reply.strong_win_rate, reply.threshold

    def scores(self, name: str, prompts: Sequence[str]) -> np.ndarray:
        spec = RouterModel(name, threshold=0.0)
        requests = [self._request(name, p, spec) for p in prompts]
        # keep each RouteBatch well under the server's default receive limit (4 MiB)
        batches, current, size = [], [], 0
        for req in requests:
            if current and size + req.ByteSize() > MAX_BATCH_BYTES:
                batches.append(current)
                current, size = [], 0
            current.append(req)
            size += req.ByteSize() + 8
        if current:
            batches.append(current)
        rates = []
        for batch in batches:
            reply = self._call(self.stub.RouteBatch, self._pb.RouteBatchRequest(requests=batch))
            rates.extend(r.strong_win_rate for r in reply.responses)
        values = np.asarray(rates, dtype=np.float64)
        if values.size != len(prompts) or (values < 0).any():
            raise LmrouteError(f"router service at {self.address} did not score every prompt (fallback)")
        return values

    def close(self) -> None:
        self.channel.close()


class _Completions:
    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def create(self, *, model: str, messages: Iterable[Any], **kwargs: Any) -> Any:
        """Route, then call the chosen model with the OpenAI SDK; `stream=True` returns its stream."""
        c = self._controller
        messages = list(messages)
        chosen, tier = c._route_messages(model, messages)
        return c._client(tier).chat.completions.create(model=chosen, messages=messages, **kwargs)

    async def acreate(self, *, model: str, messages: Iterable[Any], **kwargs: Any) -> Any:
        """`create` for asyncio: scores in a worker thread, calls the model with AsyncOpenAI."""
        c = self._controller
        messages = list(messages)
        chosen, tier = await asyncio.to_thread(c._route_messages, model, messages)
        client = c._async_client(tier)
        return await client.chat.completions.create(model=chosen, messages=messages, **kwargs)


class _Chat:
    def __init__(self, controller: Controller) -> None:
        self.completions = _Completions(controller)


class Controller:
    """RouteLLM's Controller: `chat.completions.create(model="router-mf-0.116", ...)` and friends.

    In-process, routers load once here and an MF router must know both model names. With
    `router_address`, the service must serve every router; it checks the names on each call.
    """

    def __init__(
        self,
        routers: list[str],
        strong_model: str,
        weak_model: str,
        config: dict[str, dict] | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        progress_bar: bool = False,
        router_address: str | None = None,
        strong_api_base: str | None = None,
        strong_api_key: str | None = None,
        weak_api_base: str | None = None,
        weak_api_key: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        if isinstance(routers, str) or not routers:
            raise RoutingError(f"routers must be a non-empty list of names, e.g. {list(ROUTER_NAMES)}")
        if not strong_model or not weak_model:
            raise RoutingError("strong_model and weak_model must both be given")
        names = list(dict.fromkeys(routers))
        self.strong_model, self.weak_model = strong_model, weak_model
        self.progress_bar = progress_bar
        self.timeout = timeout
        pair = (strong_model, weak_model)
        if router_address:
            self._scorer: _LocalScorer | _RemoteScorer = _RemoteScorer(router_address, names, pair, timeout)
        else:
            self._scorer = _LocalScorer(names, config or {}, pair)
        self.routers: list[str] = names
        self.model_counts: dict[str, Counter[str]] = {name: Counter() for name in names}
        self._counts_lock = threading.Lock()
        default_key = os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self._endpoints = {
            "strong": (strong_api_base or api_base, strong_api_key or api_key or default_key),
            "weak": (weak_api_base or api_base, weak_api_key or api_key or default_key),
        }
        self._clients: dict[str, Any] = {}
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()
        self.chat = _Chat(self)

    # -- routing ------------------------------------------------------------------------------
    def _check_router(self, router: str) -> None:
        if router not in self.model_counts:
            raise RoutingError(f"unknown router {router!r}; this controller has: {', '.join(self.routers)}")

    def _decide(self, router: str, prompt: str, spec: RouterModel) -> tuple[str, str]:
        """(model, tier) for one prompt; counts the call."""
        strong, score, threshold = self._scorer.decide(router, prompt, spec)
        model, tier = (self.strong_model, "strong") if strong else (self.weak_model, "weak")
        with self._counts_lock:
            self.model_counts[router][model] += 1
        if structlog.is_configured():  # an SDK stays quiet unless the app set logging up; never prompt text
            log.debug("routed", router=router, model=model, tier=tier, score=score, threshold=threshold)
        return model, tier

    def _route_messages(self, model: str, messages: Sequence[Any]) -> tuple[str, str]:
        spec = parse_router_model(model, self.routers)
        return self._decide(spec.router, routed_text(messages), spec)

    def route(self, prompt: str, router: str, threshold: float) -> str:
        """The model a prompt goes to: strong_model when its score >= threshold."""
        self._check_router(router)
        value = _valid_threshold(threshold)
        return self._decide(router, prompt, RouterModel(router, threshold=value))[0]

    def batch_calculate_win_rate(self, prompts: Iterable[str], router: str) -> np.ndarray:
        """Strong win rates of many prompts, in input order."""
        self._check_router(router)
        prompts = [str(p) for p in prompts]
        progress = _Progress(len(prompts), f"scoring with {router}", self.progress_bar)
        parts = []
        for start in range(0, len(prompts), CHUNK):
            chunk = prompts[start : start + CHUNK]
            parts.append(np.asarray(self._scorer.scores(router, chunk), dtype=np.float64))
            progress.update(len(chunk))
        return np.concatenate(parts) if parts else np.zeros((0,), dtype=np.float64)

    # -- backends -----------------------------------------------------------------------------
    @staticmethod
    def _openai():
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise LmrouteError("calling models needs the openai package: pip install openai") from exc
        return openai

    def _client_kwargs(self, tier: str) -> dict[str, Any]:
        base, key = self._endpoints[tier]
        kwargs: dict[str, Any] = {"api_key": key, "timeout": self.timeout}
        if base:
            kwargs["base_url"] = base
        return kwargs

    def _client(self, tier: str) -> Any:
        with self._clients_lock:
            if tier not in self._clients:
                self._clients[tier] = self._openai().OpenAI(**self._client_kwargs(tier))
            return self._clients[tier]

    def _async_client(self, tier: str) -> Any:
        # one AsyncOpenAI per event loop: its connection pool belongs to the loop that made it
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            per_loop = self._async_clients.setdefault(loop, {})
            if tier not in per_loop:
                per_loop[tier] = self._openai().AsyncOpenAI(**self._client_kwargs(tier))
            return per_loop[tier]

    def close(self) -> None:
        """Close the gRPC channel and the synchronous OpenAI clients."""
        self._scorer.close()
        with self._clients_lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    async def aclose(self) -> None:
        """Close the AsyncOpenAI clients that belong to the running event loop."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            clients = list(self._async_clients.pop(loop, {}).values())
        for client in clients:
            await client.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
