"""onnxruntime sessions with a configurable provider list and thread count."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
import structlog

from service.routers.cuda_graph import OnnxMissing, cuda_model_bytes

log = structlog.get_logger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
DEFAULT_PROVIDERS: tuple[str, ...] = (CUDA, CPU)


@dataclass(frozen=True)
class SessionOptions:
    """How to run a model: providers in order of preference, and CPU threads (0 = ort default)."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    # onnxruntime's intra-op threads busy-wait for work by default; in a server they take CPU
    # from the request threads on the same cores (measured: +9% raw throughput with it off)
    allow_spinning: bool = False
    extra: dict = field(default_factory=dict)


MAX_AUTO_INSTANCES = 8


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_instances(
    instances: int, intra_op_threads: int, providers: tuple[str, ...] | list[str]
) -> tuple[int, int]:
    """(model instances, intra-op threads each) with 0 meaning "choose":

    on CUDA one instance (the GPU batches); on CPU one single-threaded instance per core,
    since concurrent single-threaded runs beat one multi-threaded run on short prompts, up to
    MAX_AUTO_INSTANCES (each instance holds its own weights and buffers), the cores then
    shared out as threads."""
    on_gpu = resolve_providers(providers)[0] != CPU
    cores = cpu_cores()
    if instances <= 0:
        instances = 1 if on_gpu else min(cores, MAX_AUTO_INSTANCES)
    if intra_op_threads <= 0:
        intra_op_threads = 0 if on_gpu else max(1, cores // instances)
    return instances, intra_op_threads


def resolve_providers(wanted: tuple[str, ...] | list[str]) -> list[str]:
    """Keep the wanted providers this onnxruntime build offers; CPU is always the last resort."""
    available = set(ort.get_available_providers())
    chosen = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if missing:
        # e.g. CUDA asked for on a CPU-only install: say so once, then run on what exists
        log.info("execution_provider_unavailable", missing=missing, available=sorted(available))
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def create_session(path: Path, options: SessionOptions | None = None) -> ort.InferenceSession:
    options = options or SessionOptions()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    if not options.allow_spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.inter_op_num_threads = options.inter_op_threads
    providers = resolve_providers(options.providers)
    model: str | bytes = str(path)
    if providers[0] == CUDA:
        model = _cuda_graph(path)
    try:
        session = ort.InferenceSession(model, sess_options=so, providers=providers)
    except Exception as exc:  # a CUDA provider that is installed but cannot start (no GPU, driver)
        if providers == [CPU]:
            raise
        log.warning("execution_provider_failed_fallback_cpu", error=str(exc), wanted=providers)
        session = ort.InferenceSession(str(path), sess_options=so, providers=[CPU])
    active = session.get_providers()
    if providers[0] != active[0]:
        log.warning("execution_provider_fallback", wanted=providers[0], active=active[0])
    return session


def _cuda_graph(path: Path) -> str | bytes:
    """The model for the CUDA provider: static int8 matmuls rewritten so they run on the GPU."""
    try:
        rewritten = cuda_model_bytes(path)
    except OnnxMissing as exc:
        # the graph still runs, but its int8 matmuls fall back to the CPU at every layer
        log.warning("cuda_graph_not_rewritten", model=path.name, reason=str(exc))
        return str(path)
    if rewritten is None:
        return str(path)
    data, count = rewritten
    log.info("cuda_graph_rewritten", model=path.name, int8_matmuls=count)
    return data
