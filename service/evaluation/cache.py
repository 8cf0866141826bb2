"""On-disk cache of router scores, one .npy file per (router, weights, benchmark data)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._files import atomic_write


@dataclass(frozen=True)
class CacheKey:
    """What a cached score vector depends on.

    `data_digest` fingerprints the prompts, so a changed data directory never reuses stale
    scores; `variant` separates e.g. the seeds of a random router.
    """

    router: str
    artifact_hash: str
    benchmark: str
    data_digest: str
    variant: str = ""

    def filename(self) -> str:
        parts = [self.router, self.benchmark, self.artifact_hash, self.data_digest]
        if self.variant:
            parts.append(self.variant)
        return "__".join(_slug(part) for part in parts) + ".npy"


def prompts_digest(prompts: Sequence[str]) -> str:
    """A short, order-sensitive fingerprint of a list of prompts."""
    digest = hashlib.sha256()
    for prompt in prompts:
        data = prompt.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))  # length prefix: no ambiguous joins
        digest.update(data)
    return digest.hexdigest()[:16]


class ScoreCache:
    """Loads and atomically stores score vectors under `directory`."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: CacheKey) -> Path:
        return self.directory / key.filename()

    def load(self, key: CacheKey, length: int) -> np.ndarray | None:
        """The cached scores, or None when absent, unreadable or of the wrong length."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            scores = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a truncated or foreign file: score again and overwrite it
        if scores.shape != (length,) or scores.dtype != np.float64:
            return None
        return scores

    def save(self, key: CacheKey, scores: np.ndarray) -> Path:
        """Write `scores` atomically (concurrent runs never read half a file)."""
        path = self.path(key)
        with atomic_write(path, "wb") as handle:
            np.save(handle, np.asarray(scores, dtype=np.float64), allow_pickle=False)
        return path


def _slug(text: str) -> str:
    # Router names may hold "/" or spaces; keep file names portable.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "_"
