"""Calibration: turn a target share of strong calls into a score threshold."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from service.errors import InvalidThresholdError


def check_strong_fraction(fraction: float) -> float:
    """A share of strong calls must lie strictly between 0 and 1."""
    try:
        value = float(fraction)
    except (TypeError, ValueError) as exc:
        raise InvalidThresholdError(f"strong fraction must be a number in (0, 1), got {fraction!r}") from exc
    if math.isnan(value) or not 0.0 < value < 1.0:
        raise InvalidThresholdError(f"strong fraction must be in (0, 1), got {fraction!r}")
    return value


def threshold_from_scores(scores: Sequence[float] | np.ndarray, fraction: float) -> float:
    """The threshold that routes `fraction` of these prompts to strong (score >= threshold).

    RouteLLM's `calibrate_threshold`: the (1 - fraction) percentile of the scores.
    """
    fraction = check_strong_fraction(fraction)
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0 or not np.isfinite(values).all():
        raise ValueError("calibration needs at least one finite score")
    return float(np.quantile(values, 1.0 - fraction))


def threshold_for_fraction(table: dict, fraction: float) -> float:
    """Look a threshold up in a manifest's calibration table, interpolating between entries.

    The table maps increasing strong fractions to decreasing thresholds; fractions outside
    the table's range take its nearest end.
    """
    fraction = check_strong_fraction(fraction)
    fractions = np.asarray(table["strong_fraction"], dtype=np.float64)
    thresholds = np.asarray(table["threshold"], dtype=np.float64)
    if fractions.size == 0 or fractions.size != thresholds.size:
        raise ValueError("calibration table is empty or malformed")
    return float(np.interp(fraction, fractions, thresholds))
