"""onnxruntime sessions with a configurable provider list and thread count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
import structlog

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
    extra: dict = field(default_factory=dict)


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
    so.inter_op_num_threads = options.inter_op_threads
    providers = resolve_providers(options.providers)
    try:
        session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    except Exception as exc:  # a CUDA provider that is installed but cannot start (no GPU, driver)
        if providers == [CPU]:
            raise
        log.warning("execution_provider_failed_fallback_cpu", error=str(exc), wanted=providers)
        session = ort.InferenceSession(str(path), sess_options=so, providers=[CPU])
    active = session.get_providers()
    if providers[0] != active[0]:
        log.warning("execution_provider_fallback", wanted=providers[0], active=active[0])
    return session
