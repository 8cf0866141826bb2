"""Routers: artifacts in, strong win rates out. Used by the server, the SDK and the evaluation."""

from __future__ import annotations

import os
from pathlib import Path

from service.errors import UnknownRouterError
from service.routers.base import Router
from service.routers.bert import BertRouter
from service.routers.manifest import Manifest, load_manifest
from service.routers.mf import MFRouter
from service.routers.onnx_router import check_threshold
from service.routers.random_router import RandomRouter
from service.routers.session import SessionOptions

ROUTER_NAMES = ("random", "mf", "bert", "mf-fast")
_KINDS = {"mf": MFRouter, "bert": BertRouter}

__all__ = [
    "ROUTER_NAMES",
    "BertRouter",
    "MFRouter",
    "Manifest",
    "RandomRouter",
    "Router",
    "SessionOptions",
    "check_threshold",
    "default_artifact_dir",
    "load_manifest",
    "load_router",
]


def default_models_dir() -> Path:
    """$LMROUTE_MODELS_DIR, else ./models_onnx, else the repository's models_onnx/."""
    env = os.environ.get("LMROUTE_MODELS_DIR")
    if env:
        return Path(env)
    local = Path.cwd() / "models_onnx"
    if local.is_dir():
        return local
    return Path(__file__).resolve().parents[2] / "models_onnx"


def default_artifact_dir(name: str) -> Path:
    return default_models_dir() / name


def load_router(
    name: str,
    artifact_dir: str | Path | None = None,
    session_options: SessionOptions | None = None,
    seed: int | None = None,
    instances: int = 1,
    wide_threads: int = 0,
) -> Router:
    """Build a router by name: `random`, or an ONNX router whose manifest says mf/bert."""
    if name == "random":
        return RandomRouter(seed)
    directory = Path(artifact_dir) if artifact_dir else default_artifact_dir(name)
    if artifact_dir is None and name not in ROUTER_NAMES and not directory.is_dir():
        raise UnknownRouterError(name, list(ROUTER_NAMES))
    manifest = load_manifest(directory, verify_checksums=False)
    cls = _KINDS[manifest.kind]
    return cls(
        directory, session_options=session_options, name=name, instances=instances, wide_threads=wide_threads
    )
