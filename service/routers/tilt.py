"""The difficulty tilt both ONNX routers share: a router's own strong-vs-weak margin, leaned
towards the strong model on harder prompts (see MFRouter and BertRouter)."""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def tilted(margin: np.ndarray, difficulty: np.ndarray, tilt: float) -> np.ndarray:
    """sigmoid((margin + tilt * difficulty) / (1 + tilt)): a router's own strong-vs-weak margin
    leaned towards the strong model on harder prompts (difficulty is standardised, harder is
    higher). Dividing by 1 + tilt keeps it a weighted mean, so thresholds stay readable."""
    return sigmoid((margin + tilt * difficulty) / (1.0 + tilt))


def check_tilt(raw: dict, directory) -> float:
    """The manifest's `difficulty_tilt`: a finite number >= 0 (0 when absent)."""
    tilt = float(raw.get("difficulty_tilt", 0.0))
    if not (np.isfinite(tilt) and tilt >= 0):
        raise ValueError(f"difficulty_tilt must be a number >= 0 in {directory}")
    return tilt


def standardised_margin(p_strong: np.ndarray, mean: float = 0.0, sd: float = 1.0) -> np.ndarray:
    """(logit(P(strong wins)) - mean) / sd: the classifier's margin on the tilt's scale."""
    p = np.clip(np.asarray(p_strong, dtype=np.float64), 1e-7, 1 - 1e-7)
    return (np.log(p / (1 - p)) - mean) / sd
