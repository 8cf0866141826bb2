"""Routing curve, PGR, APGR and CPT on synthetic data and a hand-computed example."""

from __future__ import annotations

import numpy as np
import pytest

from service.evaluation.metrics import (
    EDGE_EPSILON,
    Curve,
    apgr,
    cpt,
    mean_curve,
    oracle_points,
    pgr,
    routing_curve,
)

# Ten prompts with distinct ascending scores; index j has score 0.05 + 0.1 j.
TINY_SCORES = np.linspace(0.05, 0.95, 10)
TINY_STRONG = np.array([1, 1, 0, 1, 1, 1, 1, 1, 0, 1], dtype=float)
TINY_WEAK = np.array([1, 0, 1, 0, 1, 0, 0, 0, 0, 1], dtype=float)


def synthetic(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    strong = (rng.random(n) < 0.8).astype(float)
    weak = (rng.random(n) < 0.6).astype(float)
    return strong, weak


# --- the hand-computed example -------------------------------------------------------------


def test_tiny_thresholds_are_widened_decile_edges() -> None:
    curve = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    # Quantile position 9 k / 10 interpolates the evenly spaced scores: 0.05 + 0.09 k.
    expected = 0.05 + 0.09 * np.arange(11)
    expected[0] -= EDGE_EPSILON
    expected[-1] += EDGE_EPSILON
    np.testing.assert_allclose(curve.thresholds, expected, rtol=0, atol=1e-12)
    assert len(curve) == 11


def test_tiny_strong_pct_and_quality() -> None:
    curve = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    # Threshold k sends the prompts with j >= ceil(0.9 k) to the strong model.
    np.testing.assert_allclose(curve.strong_pct, [100, 90, 80, 70, 60, 50, 40, 30, 20, 10, 0])
    # Quality = 0.4 + (sum of strong - weak gains over the prompts sent to strong) / 10.
    np.testing.assert_allclose(curve.quality, [0.8, 0.8, 0.7, 0.8, 0.7, 0.7, 0.6, 0.5, 0.4, 0.4, 0.4])
    assert curve.weak_quality == pytest.approx(0.4)
    assert curve.strong_quality == pytest.approx(0.8)
    np.testing.assert_allclose(pgr(curve), [1, 1, 0.75, 1, 0.75, 0.75, 0.5, 0.25, 0, 0, 0], atol=1e-12)


def test_tiny_apgr() -> None:
    curve = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    # Area of (quality - 0.4) with width-10 trapezoids = 10 * (2.4 - (0 + 0.4) / 2) = 22,
    # divided by the gap 0.4 times 100.
    assert apgr(curve) == pytest.approx(22 / 40)


def test_tiny_cpt_interpolates_the_first_crossing() -> None:
    curve = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    # PGR by strong %: 0:0 10:0 20:0 30:.25 40:.5 50:.75 60:.75 70:1 80:.75 90:1 100:1
    assert cpt(curve, 0.5) == pytest.approx(40.0)
    assert cpt(curve, 0.6) == pytest.approx(40 + (0.6 - 0.5) / (0.75 - 0.5) * 10)  # 44
    assert cpt(curve, 0.8) == pytest.approx(60 + (0.8 - 0.75) / (1.0 - 0.75) * 10)  # 62
    assert cpt(curve, 1.0) == pytest.approx(70.0)
    assert cpt(curve, 0.25) == pytest.approx(30.0)


def test_cpt_is_100_when_never_reached() -> None:
    curve = Curve(
        thresholds=[0.0, 0.5, 1.0],
        strong_pct=[100.0, 50.0, 0.0],
        quality=[0.7, 0.5, 0.4],
        weak_quality=0.4,
        strong_quality=0.8,
    )
    assert cpt(curve, 0.8) == 100.0
    assert cpt(curve, 0.5) == pytest.approx(50 + (0.5 - 0.25) / (0.75 - 0.25) * 50)


def test_apgr_sorts_points_and_keeps_negative_area() -> None:
    # Points given out of order; quality below the weak line counts negatively.
    curve = Curve(
        thresholds=[0.0, 0.5, 1.0],
        strong_pct=[50.0, 0.0, 100.0],
        quality=[0.2, 0.4, 0.8],
        weak_quality=0.4,
        strong_quality=0.8,
    )
    area = 50 * (0 - 0.2) / 2 + 50 * (-0.2 + 0.4) / 2
    assert apgr(curve) == pytest.approx(area / (0.4 * 100))


def test_oracle_points_on_tiny_example() -> None:
    x, y = oracle_points(TINY_STRONG, TINY_WEAK)
    # Five prompts where strong strictly beats weak: quality climbs 0.1 per 10% calls.
    np.testing.assert_allclose(x, [0, 10, 20, 30, 40, 50, 100])
    np.testing.assert_allclose(y, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9])


def test_oracle_points_orders_by_gain() -> None:
    strong = np.array([9.0, 6.0, 10.0, 3.0])
    weak = np.array([8.0, 2.0, 5.0, 4.0])
    x, y = oracle_points(strong, weak)
    np.testing.assert_allclose(x, [0, 25, 50, 75, 100])
    base = weak.sum()
    np.testing.assert_allclose(y * 4, [base, base + 5, base + 9, base + 10, base + 10])


def test_thresholds_match_pandas_qcut() -> None:
    pd = pytest.importorskip("pandas")
    scores = np.random.default_rng(3).random(997)
    _, edges = pd.qcut(scores, 10, retbins=True)
    curve = routing_curve(scores, np.ones(997), np.zeros(997))
    edges[0] -= EDGE_EPSILON
    edges[-1] += EDGE_EPSILON
    np.testing.assert_allclose(curve.thresholds, edges, rtol=0, atol=1e-12)


def test_duplicate_edges_are_kept() -> None:
    scores = np.array([0.5] * 8 + [0.9, 0.1])
    curve = routing_curve(scores, np.ones(10), np.zeros(10))
    assert len(curve) == 11
    assert curve.strong_pct[0] == 100 and curve.strong_pct[-1] == 0


# --- reference routers on a large synthetic sample -----------------------------------------


def test_oracle_beats_random_beats_anti_router() -> None:
    strong, weak = synthetic()
    beats = (strong > weak).astype(float)
    loses = (weak > strong).astype(float)
    random_scores = np.random.default_rng(1).random(len(strong))
    oracle = apgr(routing_curve(beats, strong, weak))
    random = apgr(routing_curve(random_scores, strong, weak))
    anti = apgr(routing_curve(loses, strong, weak))
    assert oracle > random > anti
    assert random == pytest.approx(0.5, abs=0.05)


def test_oracle_apgr_matches_its_geometry() -> None:
    strong, weak = synthetic()
    beats = (strong > weak).astype(float)
    p_win = beats.mean()
    p_lose = (weak > strong).mean()
    # A 0/1 score gives three distinct points (in gap units, x as a fraction):
    # (0, 0), (p_win, p_win) where only winners go strong, and (1, p_win - p_lose).
    area = p_win * p_win / 2 + (1 - p_win) * (2 * p_win - p_lose) / 2
    expected = area / (p_win - p_lose)
    assert apgr(routing_curve(beats, strong, weak)) == pytest.approx(expected, rel=1e-9)


def test_random_router_cpts_are_near_50_and_80() -> None:
    strong, weak = synthetic()
    # Seeds distinct from the data's own seed, so the scores are independent of the outcomes.
    rngs = [np.random.default_rng(100 + s) for s in range(5)]
    curves = [routing_curve(rng.random(len(strong)), strong, weak) for rng in rngs]
    assert np.mean([apgr(c) for c in curves]) == pytest.approx(0.5, abs=0.03)
    assert np.mean([cpt(c, 0.5) for c in curves]) == pytest.approx(50, abs=5)
    assert np.mean([cpt(c, 0.8) for c in curves]) == pytest.approx(80, abs=5)


# --- MT-Bench style weights -----------------------------------------------------------------


def test_weights_make_quality_a_mean_over_judgement_rows() -> None:
    rng = np.random.default_rng(7)
    n = 30
    strong_rows = [rng.integers(1, 11, size=rng.integers(1, 4)) for _ in range(n)]
    weak_rows = [rng.integers(1, 11, size=rng.integers(1, 4)) for _ in range(n)]
    scores = rng.random(n)
    curve = routing_curve(
        scores,
        [r.mean() for r in strong_rows],
        [r.mean() for r in weak_rows],
        weights=[len(r) for r in strong_rows],
        weak_weights=[len(r) for r in weak_rows],
    )
    for threshold, quality in zip(curve.thresholds, curve.quality, strict=True):
        # RouteLLM: merge each question with the routed model's rows, mean over all rows.
        rows = np.concatenate([strong_rows[i] if scores[i] >= threshold else weak_rows[i] for i in range(n)])
        assert quality == pytest.approx(rows.mean())
    assert curve.weak_quality == pytest.approx(np.concatenate(weak_rows).mean())
    assert curve.strong_quality == pytest.approx(np.concatenate(strong_rows).mean())


def test_uniform_weights_change_nothing() -> None:
    plain = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    weighted = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK, weights=np.full(10, 2.0))
    np.testing.assert_allclose(plain.quality, weighted.quality)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scores": [0.1, 0.2]}, "strong_outcome has 3 values, expected 2"),
        ({"scores": [0.1, np.nan, 0.3]}, "scores must be finite"),
        ({"scores": [0.1, np.inf, 0.3]}, "scores must be finite"),
        ({"scores": []}, "scores is empty"),
        ({"scores": [[0.1, 0.2, 0.3]]}, "scores must be 1-D"),
        ({"weak_outcome": [1, 0]}, "weak_outcome has 2 values"),
        ({"strong_outcome": [1, np.nan, 0]}, "strong_outcome must be finite"),
        ({"weights": [1, 1]}, "weights has 2 values"),
        ({"weights": [1, 0, 1]}, "weights must be positive"),
        ({"weak_weights": [1, -1, 1]}, "weak_weights must be positive"),
        ({"num_results": 0}, "num_results must be >= 1"),
        ({"scores": ["a", "b", "c"]}, "scores must be numeric"),
    ],
)
def test_routing_curve_validates_inputs(kwargs: dict, message: str) -> None:
    args = {"scores": [0.1, 0.2, 0.3], "strong_outcome": [1, 1, 0], "weak_outcome": [0, 1, 0]}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        routing_curve(**args)


def test_num_results_must_be_an_int() -> None:
    with pytest.raises(TypeError, match="num_results must be an int"):
        routing_curve([0.1, 0.2], [1, 0], [0, 0], num_results=2.5)  # type: ignore[arg-type]


def test_cpt_target_is_a_fraction() -> None:
    curve = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    for bad in (0, 50, -0.1, float("nan")):
        with pytest.raises(ValueError, match="pgr_target must be a fraction"):
            cpt(curve, bad)


def test_equal_strong_and_weak_quality_is_an_error() -> None:
    curve = routing_curve([0.1, 0.9], [1, 0], [0, 1])
    with pytest.raises(ValueError, match="performance gap is undefined"):
        apgr(curve)


def test_curve_is_immutable_and_checked() -> None:
    curve = routing_curve(TINY_SCORES, TINY_STRONG, TINY_WEAK)
    with pytest.raises(ValueError):
        curve.quality[0] = 1.0
    with pytest.raises(ValueError, match="equal length"):
        Curve([0.0], [1.0, 2.0], [0.5], 0.0, 1.0)


def test_mean_curve_averages_points() -> None:
    a = Curve([0, 1], [100, 0], [0.8, 0.4], 0.4, 0.8)
    b = Curve([0, 1], [100, 0], [0.6, 0.4], 0.4, 0.8)
    np.testing.assert_allclose(mean_curve([a, b]).quality, [0.7, 0.4])
    with pytest.raises(ValueError):
        mean_curve([])
