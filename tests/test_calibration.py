"""Calibration: a target share of strong calls becomes a threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.errors import InvalidThresholdError
from service.policy import check_strong_fraction, threshold_for_fraction, threshold_from_scores


def test_threshold_from_scores_routes_the_requested_share() -> None:
    scores = np.random.default_rng(0).uniform(size=100_000)
    for fraction in (0.05, 0.3, 0.5, 0.8, 0.95):
        threshold = threshold_from_scores(scores, fraction)
        assert (scores >= threshold).mean() == pytest.approx(fraction, abs=1e-3)
        assert threshold == pytest.approx(1 - fraction, abs=0.01)


def test_threshold_from_scores_is_routellms_percentile() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert threshold_from_scores(scores, 0.5) == pytest.approx(np.percentile(scores, 50))
    assert threshold_from_scores(scores, 0.25) == pytest.approx(np.percentile(scores, 75))


def test_table_lookup_and_interpolation() -> None:
    table = {"strong_fraction": [0.1, 0.5, 0.9], "threshold": [0.9, 0.5, 0.2]}
    assert threshold_for_fraction(table, 0.5) == pytest.approx(0.5)
    assert threshold_for_fraction(table, 0.3) == pytest.approx(0.7)
    assert threshold_for_fraction(table, 0.7) == pytest.approx(0.35)
    assert threshold_for_fraction(table, 0.05) == pytest.approx(0.9)  # clamps to the ends
    assert threshold_for_fraction(table, 0.99) == pytest.approx(0.2)


def test_shipped_table_routes_its_share_of_training_like_prompts(mf_router) -> None:
    table = mf_router.manifest.calibration
    assert len(table["strong_fraction"]) == 19
    assert table["n_prompts"] > 7000
    # more strong calls need a lower threshold
    assert all(a >= b for a, b in zip(table["threshold"], table["threshold"][1:], strict=False))


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.2, math.nan, "x"])
def test_strong_fraction_outside_open_interval_is_refused(bad) -> None:
    with pytest.raises(InvalidThresholdError):
        check_strong_fraction(bad)
    with pytest.raises(InvalidThresholdError):
        threshold_from_scores([0.1, 0.2], bad)
