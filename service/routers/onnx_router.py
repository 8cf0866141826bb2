"""What the ONNX-backed routers share: a verified manifest, a tokenizer and one session."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.routers.manifest import Manifest, load_manifest
from service.routers.session import SessionOptions, create_session
from service.routers.tokenization import BatchTokenizer

# Empty prompts still get a defined score: the tokenizer yields just [CLS] [SEP].


class OnnxRouter:
    kind = ""

    def __init__(
        self,
        artifact_dir: str | Path,
        session_options: SessionOptions | None = None,
        name: str | None = None,
        max_batch: int = 64,
        instances: int = 1,
        wide_threads: int = 0,
    ) -> None:
        """`instances`: independent onnxruntime sessions on the same model, so that several
        batches can run at once (one per session); `run(..., instance=i)` picks one.
        `wide_threads` > 0 adds one more session with that many intra-op threads, at index
        `wide_instance`, for a batch that has the machine to itself."""
        self.manifest: Manifest = load_manifest(artifact_dir)
        if self.manifest.kind != self.kind:
            raise ValueError(f"{artifact_dir} holds a {self.manifest.kind!r} router, not {self.kind!r}")
        self.name = name or self.manifest.name
        self.artifact_hash = self.manifest.artifact_hash
        self.tokenizer = BatchTokenizer(self.manifest.tokenizer_file, self.manifest.max_tokens)
        if instances < 1:
            raise ValueError(f"instances must be >= 1, got {instances}")
        self.sessions = [create_session(self.manifest.model_file, session_options) for _ in range(instances)]
        self.instances = instances
        self.wide_instance: int | None = None
        if wide_threads > 0:
            wide = dataclasses.replace(session_options or SessionOptions(), intra_op_threads=wide_threads)
            self.sessions.append(create_session(self.manifest.model_file, wide))
            self.wide_instance = instances
        self.session = self.sessions[0]
        self.provider = self.session.get_providers()[0]
        self.max_batch = max_batch
        self._output_names = [o.name for o in self.session.get_outputs()]

    def run(self, prompts: Sequence[str], outputs: list[str], instance: int = 0) -> list[np.ndarray]:
        """Tokenize and run one batch on one session; returns the named outputs."""
        ids, mask = self.tokenizer(prompts)
        return self.sessions[instance].run(outputs, {"input_ids": ids, "attention_mask": mask})

    def run_rows(self, prompts: Sequence[str], instance: int = 0) -> np.ndarray:
        """One batch of prompts -> one row each: what the batcher runs and the cache keeps."""
        raise NotImplementedError

    def scores_from_rows(self, rows: np.ndarray, strong_model: str, weak_model: str) -> np.ndarray:
        """Rows from run_rows -> P(strong wins) for the (strong, weak) pair."""
        raise NotImplementedError

    def run_chunked(self, prompts: Sequence[str], outputs: list[str]) -> list[np.ndarray]:
        """Run prompts in length-sorted chunks of max_batch, results in input order."""
        prompts = list(prompts)
        if not prompts:
            return [np.zeros((0,), dtype=np.float32) for _ in outputs]
        order = np.argsort([len(p) for p in prompts], kind="stable")
        parts: list[list[np.ndarray]] = [[] for _ in outputs]
        for start in range(0, len(prompts), self.max_batch):
            chunk = [prompts[i] for i in order[start : start + self.max_batch]]
            for store, value in zip(parts, self.run(chunk, outputs), strict=False):
                store.append(value)
        merged = [np.concatenate(p, axis=0) for p in parts]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return [m[inverse] for m in merged]

    @property
    def default_pair(self) -> tuple[str, str]:
        return self.manifest.default_pair

    @property
    def default_threshold(self) -> float:
        return float(self.manifest.raw.get("default_threshold", 0.5))


def check_threshold(threshold: float) -> float:
    """A routing threshold must be a number in [0, 1]."""
    from service.errors import InvalidThresholdError

    try:
        value = float(threshold)
    except (TypeError, ValueError) as exc:
        raise InvalidThresholdError(f"threshold must be a number in [0, 1], got {threshold!r}") from exc
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidThresholdError(f"threshold must be in [0, 1], got {threshold!r}")
    return value
