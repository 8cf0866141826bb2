"""Shared fixtures: the shipped routers, loaded once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.routers import BertRouter, MFRouter, load_router

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models_onnx"


@pytest.fixture(scope="session")
def mf_router() -> MFRouter:
    return load_router("mf", MODELS / "mf")  # type: ignore[return-value]


@pytest.fixture(scope="session")
def bert_router() -> BertRouter:
    return load_router("bert", MODELS / "bert")  # type: ignore[return-value]
