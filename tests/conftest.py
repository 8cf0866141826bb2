"""Shared fixtures: the shipped routers, loaded once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import onnxruntime as ort
import pytest

from service.routers import BertRouter, MFRouter, SessionOptions, load_router

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models_onnx"
# the stored reference scores and the batch-invariance checks are the CPU provider's numerics:
# pin it, so the suite means the same on a GPU machine (tests/test_cuda_graph.py covers CUDA)
CPU_ONLY = SessionOptions(providers=("CPUExecutionProvider",))
# where onnxruntime-gpu finds a GPU, the service (configured CUDA first) runs on it
SERVICE_PROVIDER = (
    "CUDAExecutionProvider"
    if "CUDAExecutionProvider" in ort.get_available_providers()
    else "CPUExecutionProvider"
)
# a prompt's score whatever shares its batch: exact on the CPU's int8 graph; on CUDA, batch
# shapes change float rounding (tests/test_cuda_graph.py)
BATCH_INVARIANCE_ATOL = 1e-3 if SERVICE_PROVIDER == "CUDAExecutionProvider" else 1e-5


def subprocess_env() -> dict[str, str]:
    """The environment for a service subprocess: this checkout first on PYTHONPATH."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture(scope="session")
def mf_router() -> MFRouter:
    return load_router("mf", MODELS / "mf", session_options=CPU_ONLY)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def bert_router() -> BertRouter:
    return load_router("bert", MODELS / "bert", session_options=CPU_ONLY)  # type: ignore[return-value]


@pytest.fixture(scope="session")
def mf_fast_router() -> MFRouter:
    return load_router("mf-fast", MODELS / "mf-fast", session_options=CPU_ONLY)  # type: ignore[return-value]
