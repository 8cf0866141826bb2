"""The transport-free routing core: request -> validate -> (cache | batch -> score) -> decide.

The gRPC server, the gateway and the SDK are thin adapters over RoutingEngine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import math
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import structlog

from service.batch_probe import probe_batch_cap
from service.batching import Batcher, estimate_tokens
from service.config import Config, RouterConfig
from service.errors import LmrouteError, UnknownModelError, UnknownRouterError
from service.metrics import Metrics
from service.policy.calibration import threshold_for_fraction
from service.policy.messages import routed_text
from service.policy.model_string import RoutingError
from service.policy.rules import match_rule
from service.routers import (
    BertRouter,
    MFRouter,
    RandomRouter,
    SessionOptions,
    default_artifact_dir,
    load_manifest,
    load_router,
)
from service.routers.session import MAX_AUTO_INSTANCES, cpu_cores, plan_instances, resolve_providers

log = structlog.get_logger(__name__)
NOT_SCORED = -1.0  # strong_win_rate of a decision made by a policy rule, without scoring


class InvalidRequestError(LmrouteError):
    """Bad input: the transports answer INVALID_ARGUMENT / HTTP 400 with this message."""


@dataclass
class RouteInput:
    prompt: str = ""
    messages: Sequence[tuple[str, str]] = ()
    router: str = ""
    threshold: float | None = None
    strong_fraction: float | None = None
    strong_model: str = ""
    weak_model: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""


@dataclass
class Decision:
    model: str
    strong: bool
    strong_win_rate: float
    threshold: float
    router: str
    cached: bool
    request_id: str
    reason: str
    batch_size: int = 0


@dataclass
class _Plan:
    """A validated request, ready to score."""

    text: str
    router: str
    strong: str
    weak: str
    threshold: float
    request_id: str
    rule: str | None = None
    forced: str | None = None  # "strong" | "weak" from a policy rule


def normalize_prompt(text: str) -> str:
    """Whitespace-collapsed text: the tokenizers split on whitespace, so scores do not change."""
    return " ".join(text.split())


class _LRU:
    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, key: tuple) -> np.ndarray | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


class _RouterSlot:
    """One configured router: its model, batcher, pair and default threshold."""

    def __init__(self, cfg: RouterConfig, router, batcher: Batcher | None) -> None:
        self.cfg = cfg
        self.router = router
        self.batcher = batcher
        strong, weak = router.default_pair
        self.strong = cfg.strong_model or strong
        self.weak = cfg.weak_model or weak
        if cfg.default_threshold is not None:
            self.default_threshold = float(cfg.default_threshold)
        else:
            self.default_threshold = float(getattr(router, "default_threshold", 0.5))

    @property
    def calibration(self) -> dict | None:
        return self.router.manifest.calibration if isinstance(self.router, (MFRouter, BertRouter)) else None

    def scores(self, rows: np.ndarray, strong: str, weak: str) -> np.ndarray:
        return self.router.scores_from_rows(rows, strong, weak)


def _low_load_threads(configured: int | None, instances: int, threads: int, options: SessionOptions) -> int:
    """Threads of the session a lone batch runs on (0: none). Automatic: on the CPU, where
    single-threaded instances leave cores idle whenever only one prompt is in flight."""
    if configured is not None:
        return configured
    on_cpu = resolve_providers(options.providers)[0] == "CPUExecutionProvider"
    # measured on 2 cores; more threads than that many instances would only sync on a short prompt
    return min(cpu_cores(), MAX_AUTO_INSTANCES) if on_cpu and instances > 1 and threads == 1 else 0


class RoutingEngine:
    def __init__(self, config: Config, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._slots: dict[str, _RouterSlot] = {}
        self._cache = _LRU(config.cache_size)
        self.ready = False
        self._instances, self._threads, self._wide_threads = 1, 0, 0

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load every configured router, start its batcher and warm it up."""
        runtime = self.config.runtime
        self._instances, threads = plan_instances(
            runtime.instances, runtime.intra_op_threads, runtime.providers
        )
        options = SessionOptions(
            providers=tuple(runtime.providers),
            intra_op_threads=threads,
            allow_spinning=runtime.allow_spinning,
        )
        self._threads = threads
        self._wide_threads = _low_load_threads(runtime.low_load_threads, self._instances, threads, options)
        models_dir = Path(self.config.models_dir) if self.config.models_dir else None
        # routers on the same artifact share one session and one batcher: each prompt runs once
        shared: dict[str, tuple[object, Batcher]] = {}
        for cfg in self.config.routers:
            artifact = cfg.artifact_dir or (str(models_dir / cfg.name) if models_dir else None)
            if cfg.name == "random" and cfg.artifact_dir is None:
                router, batcher = RandomRouter(cfg.seed), None
            else:
                directory = Path(artifact) if artifact else default_artifact_dir(cfg.name)
                key = load_manifest(directory, verify_checksums=False).artifact_hash
                if key in shared:
                    router, batcher = shared[key]
                else:
                    router = await asyncio.to_thread(
                        load_router,
                        cfg.name,
                        directory,
                        options,
                        cfg.seed,
                        self._instances,
                        self._wide_threads,
                    )
                    for instance in range(len(router.sessions)):
                        await asyncio.to_thread(router.run_rows, ["warm-up"], instance)
                    batcher = self._start_batcher(router, await self._batch_cap(router))
                    shared[key] = (router, batcher)
            slot = _RouterSlot(cfg, router, batcher)
            for model in (slot.strong, slot.weak):  # a bad configured pair fails at start
                if isinstance(router, MFRouter):
                    router.canonical(model)
            self._slots[cfg.name] = slot
        self.ready = True
        log.info("engine_ready", **self.describe())

    async def _batch_cap(self, router) -> int:
        """The configured max batch size, lowered to what pays on this machine if probing."""
        cap = self.config.batching.max_batch_size
        if not self.config.batching.probe_batch_size or cap == 1:
            return cap
        ratio = self.config.batching.max_padding_ratio
        chosen, per_prompt = await asyncio.to_thread(
            probe_batch_cap, router.run_rows, cap, padding_ratio=ratio
        )
        log.info(
            "batch_size_probed",
            model=router.manifest.name,
            max_batch_size=chosen,
            ms_per_prompt={size: round(seconds * 1000, 3) for size, seconds in per_prompt.items()},
        )
        return chosen

    def _start_batcher(self, router, max_batch_size: int) -> Batcher:
        batcher = Batcher(
            router.manifest.name,  # the `model` metric label: the artifact, not the router alias
            [functools.partial(router.run_rows, instance=i) for i in range(router.instances)],
            estimate_tokens(router.manifest.max_tokens),
            dataclasses.replace(self.config.batching, max_batch_size=max_batch_size),
            self.metrics,
            provider=router.provider,
            run_alone=None
            if router.wide_instance is None
            else functools.partial(router.run_rows, instance=router.wide_instance),
        )
        batcher.start()
        return batcher

    async def close(self, timeout: float | None = None) -> None:
        self.ready = False
        batchers = {id(s.batcher): s.batcher for s in self._slots.values() if s.batcher}
        await asyncio.gather(*(b.close(timeout) for b in batchers.values()))

    def describe(self) -> dict:
        b = self.config.batching
        return {
            "routers": {
                name: {
                    "kind": getattr(s.router, "kind", "random") or "random",
                    "artifact_version": s.router.manifest.version if s.batcher else "",
                    "artifact_hash": s.router.artifact_hash,
                    "provider": getattr(s.router, "provider", "none"),
                    "pair": [s.strong, s.weak],
                    "default_threshold": s.default_threshold,
                    "max_batch_size": s.batcher.max_batch_size if s.batcher else None,
                    "queued_batches": s.batcher.queued_batches if s.batcher else None,
                }
                for name, s in self._slots.items()
            },
            "model_instances": self._instances,
            "intra_op_threads": self._threads,
            "low_load_threads": self._wide_threads,
            "allow_spinning": self.config.runtime.allow_spinning,
            "batching": {
                "max_batch_size": b.max_batch_size,
                "max_batch_tokens": b.max_batch_tokens,
                "max_wait_us": b.max_wait_us,
                "max_queue": b.max_queue,
            },
            "cache_size": self.config.cache_size,
        }

    @property
    def router_names(self) -> list[str]:
        return list(self._slots)

    def slot(self, name: str) -> _RouterSlot:
        return self._slots[name]

    # -- validation --------------------------------------------------------------------------
    def plan(self, req: RouteInput) -> _Plan:
        """Validate a request; InvalidRequestError says what is wrong."""
        has_messages = len(req.messages) > 0
        if req.prompt and has_messages:
            raise InvalidRequestError("give either prompt or messages, not both")
        if has_messages:
            try:
                text = routed_text(list(req.messages))
            except RoutingError as exc:
                raise InvalidRequestError(str(exc)) from exc
        else:  # an empty or whitespace-only prompt is defined: it scores as the empty prompt
            text = req.prompt
        name = req.router or self.config.routers[0].name
        if name not in self._slots:
            raise InvalidRequestError(str(UnknownRouterError(name, self.router_names)))
        slot = self._slots[name]
        if req.threshold is not None and req.strong_fraction is not None:
            raise InvalidRequestError("give either threshold or strong_fraction, not both")
        if req.threshold is not None:
            t = req.threshold
            if math.isnan(t) or not 0.0 <= t <= 1.0:
                raise InvalidRequestError(f"threshold must be in [0, 1], got {t}")
            threshold = float(t)
        elif req.strong_fraction is not None:
            f = req.strong_fraction
            if math.isnan(f) or not 0.0 < f < 1.0:
                raise InvalidRequestError(f"strong_fraction must be in (0, 1), got {f}")
            if slot.calibration:
                threshold = threshold_for_fraction(slot.calibration, f)
            else:  # random: uniform scores
                threshold = 1.0 - f
        else:
            threshold = slot.default_threshold
        strong = req.strong_model or slot.strong
        weak = req.weak_model or slot.weak
        if isinstance(slot.router, MFRouter):
            try:
                slot.router.canonical(strong)
                slot.router.canonical(weak)
            except UnknownModelError as exc:
                raise InvalidRequestError(str(exc)) from exc
        limits = self.config.limits
        if len(req.labels) > limits.max_labels:
            raise InvalidRequestError(f"at most {limits.max_labels} labels, got {len(req.labels)}")
        for key, value in req.labels.items():
            if len(key) > limits.max_label_chars or len(value) > limits.max_label_chars:
                raise InvalidRequestError(
                    f"label {key[:40]!r}: keys and values are at most {limits.max_label_chars} characters"
                )
        request_id = req.request_id or uuid.uuid4().hex
        rule = match_rule(self.config.policy.rules, req.labels)
        return _Plan(
            text=text,
            router=name,
            strong=strong,
            weak=weak,
            threshold=threshold,
            request_id=request_id,
            rule=rule.name if rule else None,
            forced=rule.route if rule else None,
        )

    # -- routing -----------------------------------------------------------------------------
    async def route(self, req: RouteInput, deadline: float | None = None) -> Decision:
        return await self.decide(self.plan(req), deadline)

    async def route_many(self, reqs: Sequence[RouteInput], deadline: float | None = None) -> list[Decision]:
        plans = [self.plan(r) for r in reqs]  # all valid, or the whole call is INVALID_ARGUMENT
        return list(await asyncio.gather(*(self.decide(p, deadline) for p in plans)))

    async def decide(self, plan: _Plan, deadline: float | None = None) -> Decision:
        slot = self._slots[plan.router]
        if plan.forced is not None:
            return self._finish(plan, slot, plan.forced == "strong", NOT_SCORED, f"policy:{plan.rule}")
        if isinstance(slot.router, RandomRouter):
            score = float(slot.router.score([plan.text])[0])
            return self._finish(plan, slot, score >= plan.threshold, score, "score")
        # the cache holds the model's raw outputs (logits / probabilities), which the artifact
        # fixes: routers on one artifact share entries; pair and threshold apply afterwards
        key = (slot.router.artifact_hash, hashlib.sha256(normalize_prompt(plan.text).encode()).digest())
        row = self._cache.get(key)
        cached, batch_size = row is not None, 0
        if cached:
            self.metrics.cache_hits.inc()
        else:
            self.metrics.cache_misses.inc()
            try:
                row, batch_size = await slot.batcher.submit(plan.text, deadline)
            except (asyncio.CancelledError, LmrouteError):
                raise  # cancelled, queue full, deadline, shutdown: the transport maps these
            except Exception as exc:  # noqa: BLE001 - inference failed: the fallback policy decides
                log.warning("scoring_failed", router=plan.router, request_id=plan.request_id, error=str(exc))
                strong = self.config.policy.fallback == "strong"
                return self._finish(plan, slot, strong, NOT_SCORED, "fallback:scoring_error")
            self._cache.put(key, row)
        score = float(slot.scores(row[None, :], plan.strong, plan.weak)[0])
        decision = self._finish(plan, slot, score >= plan.threshold, score, "score", cached)
        decision.batch_size = batch_size
        return decision

    def _finish(self, plan, slot, strong: bool, score: float, reason: str, cached: bool = False) -> Decision:
        model = plan.strong if strong else plan.weak
        tier = "strong" if strong else "weak"
        self.metrics.decisions.labels(plan.router, tier, model, reason).inc()
        if score != NOT_SCORED:
            self.metrics.strong_win_rate.labels(plan.router).observe(score)
        return Decision(
            model=model,
            strong=strong,
            strong_win_rate=score,
            threshold=plan.threshold,
            router=plan.router,
            cached=cached,
            request_id=plan.request_id,
            reason=reason,
        )
