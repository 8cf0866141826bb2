"""Validation on the train hold-out (never on eval/): the paper's APGR procedure applied to
hold-out prompts, per source, with tier outcomes standing in for the default pair."""

from __future__ import annotations

import numpy as np

from export.data import TrainingPool
from export.tiers import DEFAULT_STRONG, DEFAULT_WEAK, STRONG_TIER, WEAK_TIER
from service.evaluation.metrics import apgr, routing_curve


def tier_outcome(pool: TrainingPool, tier: tuple[str, ...], exact: str) -> np.ndarray:
    """Per prompt: the exact model's outcome where labelled, else the tier's mean (NaN if none)."""
    cols = [pool.model_index(m) for m in tier if m in pool.models]
    obs, val = pool.observed[:, cols], pool.outcome[:, cols]
    count = obs.sum(1)
    mean = np.where(count > 0, (val * obs).sum(1) / np.maximum(count, 1), np.nan)
    k = pool.model_index(exact)
    return np.where(pool.observed[:, k], pool.outcome[:, k], mean)


class HoldoutValidator:
    """Scores a router on the hold-out: APGR per source and their mean, plus AUC."""

    def __init__(self, pool: TrainingPool, val_idx: np.ndarray, min_prompts: int = 20) -> None:
        self.strong = tier_outcome(pool, STRONG_TIER, DEFAULT_STRONG)
        self.weak = tier_outcome(pool, WEAK_TIER, DEFAULT_WEAK)
        sources = np.array(pool.sources)
        usable = val_idx[~np.isnan(self.strong[val_idx]) & ~np.isnan(self.weak[val_idx])]
        self.groups = {
            s: usable[sources[usable] == s]
            for s in sorted(set(sources[usable]))
            if (sources[usable] == s).sum() >= min_prompts
        }
        self.val_idx = val_idx

    def __call__(self, scores: np.ndarray) -> dict[str, float]:
        """`scores` covers every prompt of the pool (or at least the hold-out ones)."""
        out = {}
        for source, idx in self.groups.items():
            curve = routing_curve(scores[idx], self.strong[idx], self.weak[idx])
            out[f"apgr_{source}"] = apgr(curve)
        out["apgr_mean"] = float(np.mean(list(out.values())))
        idx = np.concatenate(list(self.groups.values()))
        out["auc_strong_better"] = auc(scores[idx], self.strong[idx] > self.weak[idx])
        return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties share ranks)."""
    labels = labels.astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


REGIME_WEAK_MIN = 0.5
REGIME_MIN_GAP = 0.08


class RegimeValidator:
    """Hold-out APGR in the regime a router is deployed in: the weak model is usually right.

    Per topic group (a source, or an MMLU-Pro category), every (stronger, weaker) model pair
    whose train-split accuracies differ by at least `min_gap` and whose weaker model is right
    at least `weak_min` of the time; mean APGR over up to `max_pairs` such pairs per group,
    then over groups.

    Why a regime: where the weak model mostly fails (MMLU-Pro chemistry, MATH level 5: weak
    models at 0.1-0.3), "harder prompt" means "both fail", and routing by difficulty does no
    better than chance there. In the regime where routing pays, the weak model is adequate on
    most prompts (RouteLLM's Mixtral vs GPT-4), and a harder prompt is where the strong model
    earns its price. A validation over every pair mixes the two regimes, and its ranking of
    routers was measured not to carry over (see the models_onnx manifests).
    """

    def __init__(
        self,
        pool: TrainingPool,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        weak_min: float = REGIME_WEAK_MIN,
        min_gap: float = REGIME_MIN_GAP,
        max_pairs: int = 60,
        seed: int = 0,
    ) -> None:
        self.pool = pool
        rng = np.random.default_rng(seed)
        groups = np.array(pool.groups)
        self.groups: dict[str, tuple[np.ndarray, list[tuple[int, int]]]] = {}
        for group in sorted(set(pool.groups)):
            val = val_idx[groups[val_idx] == group]
            train = train_idx[groups[train_idx] == group]
            pairs = regime_pairs(pool, train, val, weak_min, min_gap)
            if len(val) < 20 or len(pairs) < 5:
                continue
            chosen = rng.choice(len(pairs), size=min(max_pairs, len(pairs)), replace=False)
            self.groups[group] = (val, [pairs[i] for i in sorted(chosen)])

    def __call__(self, pair_scores) -> dict[str, float]:
        """`pair_scores(idx, a, b)` -> the router's scores of prompts idx for pair (a, b)."""
        out = {}
        observed, outcome = self.pool.observed, self.pool.outcome
        for group, (val, pairs) in self.groups.items():
            values = []
            for a, b in pairs:
                idx = val[observed[val, a] & observed[val, b]]
                ya, yb = outcome[idx, a], outcome[idx, b]
                if len(idx) < 10 or abs(ya.mean() - yb.mean()) < 0.02:
                    continue
                values.append(apgr(routing_curve(pair_scores(idx, a, b), ya, yb)))
            if values:
                out[f"regime_apgr_{group}"] = float(np.mean(values))
        out["regime_apgr_mean"] = float(np.mean(list(out.values())))
        return out


def regime_pairs(
    pool: TrainingPool, train: np.ndarray, val: np.ndarray, weak_min: float, min_gap: float
) -> list[tuple[int, int]]:
    """(stronger, weaker) model pairs labelled on most of `val`, by accuracy on `train`."""
    if not len(val) or not len(train):
        return []
    models = [
        k
        for k in range(len(pool.models))
        if pool.observed[val, k].mean() > 0.8 and pool.observed[train, k].sum() >= 10
    ]
    acc = {k: float(pool.outcome[train, k][pool.observed[train, k]].mean()) for k in models}
    return [(a, b) for a in models for b in models if acc[a] - acc[b] >= min_gap and acc[b] >= weak_min]
