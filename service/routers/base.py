"""The interface every router implements: a batch of prompts in, strong win rates out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Router(Protocol):
    """Scores prompts with P(strong model wins | prompt) for a (strong, weak) pair.

    `artifact_hash` identifies the exact weights (it keys score caches); `default_pair`
    is the (strong, weak) pair used when a caller names none.
    """

    name: str
    artifact_hash: str
    default_pair: tuple[str, str]

    def score(
        self,
        prompts: Sequence[str],
        strong_model: str | None = None,
        weak_model: str | None = None,
    ) -> np.ndarray:
        """Return float64 strong win rates in [0, 1], one per prompt, in input order."""
        ...
