"""Routing curves and the RouteLLM metrics (PGR, APGR, CPT) computed from them.

Pure numpy: no I/O, no knowledge of benchmarks or routers. A curve is what the RouteLLM
evaluation produces for one router on one benchmark: the quality reached at each of
`num_results + 1` score thresholds, and the share of prompts each threshold sends to the
strong model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

# The outermost quantile edges are widened by this much so that the first threshold routes
# every prompt to the strong model and the last routes none; with ">=" everywhere this routes
# exactly like RouteLLM's ">=" on the first edges and ">" on the last (the maximum score).
EDGE_EPSILON = 1e-5


@dataclass(frozen=True, eq=False)
class Curve:
    """Quality against strong-model share, one point per threshold (ascending thresholds).

    `strong_pct` is in percent (0-100). `quality` is on the benchmark's own scale (mean
    correctness in [0, 1], or mean judge score). The arrays are read-only.
    """

    thresholds: np.ndarray
    strong_pct: np.ndarray
    quality: np.ndarray
    weak_quality: float
    strong_quality: float

    def __post_init__(self) -> None:
        arrays = {}
        for field in ("thresholds", "strong_pct", "quality"):
            array = np.array(getattr(self, field), dtype=np.float64)
            if array.ndim != 1:
                raise ValueError(f"Curve.{field} must be 1-D, got shape {array.shape}")
            array.setflags(write=False)
            arrays[field] = array
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError("Curve arrays must be non-empty and of equal length")
        for field, array in arrays.items():
            object.__setattr__(self, field, array)
        object.__setattr__(self, "weak_quality", float(self.weak_quality))
        object.__setattr__(self, "strong_quality", float(self.strong_quality))

    def __len__(self) -> int:
        return len(self.quality)


def routing_curve(
    scores: ArrayLike,
    strong_outcome: ArrayLike,
    weak_outcome: ArrayLike,
    num_results: int = 10,
    weights: ArrayLike | None = None,
    weak_weights: ArrayLike | None = None,
) -> Curve:
    """Route at the `num_results`-quantile edges of `scores` and measure quality at each.

    A prompt goes to the strong model when its score is >= the threshold. Thresholds are
    `np.quantile(scores, linspace(0, 1, num_results + 1))` (pandas qcut's bin edges, with
    duplicate edges kept), the first lowered and the last raised by EDGE_EPSILON.

    Outcomes are per prompt: correctness (0/1) or a mean score. `weights` is the number of
    rows each outcome averages (MT-Bench: judgement rows per question) so that quality is the
    mean over rows, exactly as RouteLLM computes it; `weak_weights` defaults to `weights`,
    which defaults to 1 per prompt. Strong % is the share of prompts, not rows.
    """
    if isinstance(num_results, bool) or not isinstance(num_results, (int, np.integer)):
        raise TypeError(f"num_results must be an int, got {num_results!r}")
    if num_results < 1:
        raise ValueError(f"num_results must be >= 1, got {num_results}")
    score_arr = _vector("scores", scores)
    n = len(score_arr)
    strong = _vector("strong_outcome", strong_outcome, n)
    weak = _vector("weak_outcome", weak_outcome, n)
    strong_w, weak_w = _weights(weights, weak_weights, n)

    strong_sum = strong * strong_w
    weak_sum = weak * weak_w

    thresholds = np.quantile(score_arr, np.linspace(0.0, 1.0, num_results + 1))
    thresholds[0] -= EDGE_EPSILON
    thresholds[-1] += EDGE_EPSILON

    strong_pct = np.empty(len(thresholds))
    quality = np.empty(len(thresholds))
    for i, threshold in enumerate(thresholds):
        to_strong = score_arr >= threshold
        total = strong_sum[to_strong].sum() + weak_sum[~to_strong].sum()
        rows = strong_w[to_strong].sum() + weak_w[~to_strong].sum()
        quality[i] = total / rows
        strong_pct[i] = to_strong.mean() * 100.0

    return Curve(
        thresholds=thresholds,
        strong_pct=strong_pct,
        quality=quality,
        weak_quality=weak_sum.sum() / weak_w.sum(),
        strong_quality=strong_sum.sum() / strong_w.sum(),
    )


def pgr(curve: Curve) -> np.ndarray:
    """Performance gap recovered at each point of `curve`, in the curve's order."""
    return (curve.quality - curve.weak_quality) / _gap(curve)


def apgr(curve: Curve) -> float:
    """Average PGR: trapezoid area of (quality - weak) over strong %, divided by the area
    between the strong and weak lines over 0-100%. Negative stretches are not clipped."""
    x, y = _sorted_points(curve)
    area = _trapezoid(y - curve.weak_quality, x)
    return float(area / (_gap(curve) * 100.0))


def cpt(curve: Curve, pgr_target: float) -> float:
    """Call-performance threshold: the strong % at which PGR first reaches `pgr_target`.

    Points are walked in increasing strong %; the crossing is linearly interpolated between
    the two points that bracket it. Returns 100.0 when the target is never reached.
    `pgr_target` is a fraction, e.g. 0.5 for CPT(50%).
    """
    target = float(pgr_target)
    if not np.isfinite(target) or not 0.0 < target <= 1.0:
        raise ValueError(f"pgr_target must be a fraction in (0, 1], got {pgr_target!r}")
    x, y = _sorted_points(curve)
    recovered = (y - curve.weak_quality) / _gap(curve)
    for i in range(len(x)):
        if recovered[i] >= target:
            if i == 0:
                return float(x[0])
            x0, x1 = x[i - 1], x[i]
            p0, p1 = recovered[i - 1], recovered[i]
            return float(x0 + (target - p0) * (x1 - x0) / (p1 - p0))
    return 100.0


def mean_curve(curves: Sequence[Curve]) -> Curve:
    """Point-wise mean of curves of equal length (used to plot a seeded router's average)."""
    if not curves:
        raise ValueError("mean_curve needs at least one curve")
    if len({len(c) for c in curves}) != 1:
        raise ValueError("mean_curve needs curves with the same number of points")
    return Curve(
        thresholds=np.mean([c.thresholds for c in curves], axis=0),
        strong_pct=np.mean([c.strong_pct for c in curves], axis=0),
        quality=np.mean([c.quality for c in curves], axis=0),
        weak_quality=float(np.mean([c.weak_quality for c in curves])),
        strong_quality=float(np.mean([c.strong_quality for c in curves])),
    )


def oracle_points(
    strong_outcome: ArrayLike,
    weak_outcome: ArrayLike,
    weights: ArrayLike | None = None,
    weak_weights: ArrayLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The best achievable quality at each strong % (RouteLLM's "optimal" line).

    The oracle sends to the strong model only prompts where it strictly beats the weak one,
    largest gain first. Returns (strong_pct, quality) for k = 0..m such prompts, plus a flat
    point at 100% when m < n (extra strong calls cannot raise quality further).
    """
    strong = _vector("strong_outcome", strong_outcome)
    n = len(strong)
    weak = _vector("weak_outcome", weak_outcome, n)
    strong_w, weak_w = _weights(weights, weak_weights, n)

    gain = strong - weak
    winners = np.flatnonzero(gain > 0)
    order = winners[np.argsort(-gain[winners], kind="stable")]

    # Totals with k = 0..m winners switched from weak to strong.
    sum_delta = strong[order] * strong_w[order] - weak[order] * weak_w[order]
    row_delta = strong_w[order] - weak_w[order]
    sums = np.sum(weak * weak_w) + np.concatenate([[0.0], np.cumsum(sum_delta)])
    rows = np.sum(weak_w) + np.concatenate([[0.0], np.cumsum(row_delta)])
    strong_pct = np.arange(len(order) + 1) * 100.0 / n
    quality = sums / rows
    if len(order) < n:
        strong_pct = np.append(strong_pct, 100.0)
        quality = np.append(quality, quality[-1])
    return strong_pct, quality


def _vector(name: str, values: ArrayLike, length: int | None = None) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if length is None and len(array) == 0:
        raise ValueError(f"{name} is empty")
    if length is not None and len(array) != length:
        raise ValueError(f"{name} has {len(array)} values, expected {length} (one per prompt)")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} must be finite; index {bad} is {array[bad]}")
    return array


def _weights(
    weights: ArrayLike | None, weak_weights: ArrayLike | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    strong_w = np.ones(n) if weights is None else _vector("weights", weights, n)
    weak_w = strong_w if weak_weights is None else _vector("weak_weights", weak_weights, n)
    for name, w in (("weights", strong_w), ("weak_weights", weak_w)):
        if np.any(w <= 0):
            raise ValueError(f"{name} must be positive (rows behind each prompt's outcome)")
    return strong_w, weak_w


def _gap(curve: Curve) -> float:
    gap = curve.strong_quality - curve.weak_quality
    if gap == 0:
        raise ValueError("strong and weak quality are equal: the performance gap is undefined")
    return gap


def _sorted_points(curve: Curve) -> tuple[np.ndarray, np.ndarray]:
    # RouteLLM sorts by strong %; ties (duplicate thresholds) are broken by quality.
    order = np.lexsort((curve.quality, curve.strong_pct))
    return curve.strong_pct[order], curve.quality[order]


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    # np.trapz was renamed np.trapezoid in numpy 2; spell it out to support both.
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
