"""The random router: uniform scores, seedable. It checks the evaluation harness (APGR ~0.5)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


class RandomRouter:
    name = "random"
    default_pair = ("gpt-4-1106-preview", "mixtral-8x7b-instruct-v0.1")
    default_threshold = 0.5
    provider = "none"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.artifact_hash = hashlib.sha256(f"random:{seed}".encode()).hexdigest()[:16]

    def with_seed(self, seed: int) -> RandomRouter:
        return RandomRouter(seed)

    def score(
        self,
        prompts: Sequence[str],
        strong_model: str | None = None,
        weak_model: str | None = None,
    ) -> np.ndarray:
        return self._rng.uniform(0.0, 1.0, size=len(prompts))
