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


class AllPairsValidator:
    """A lower-noise hold-out check: mean APGR over many (stronger, weaker) model pairs.

    Per source, sample up to `max_pairs` pairs whose train-split accuracy differs by at least
    `min_gap`, both labelled on most hold-out prompts; route each pair with the router's own
    pair score and average the APGRs. One pair on ~150 prompts moves APGR by +-0.05; sixty
    pairs average most of that noise out.
    """

    def __init__(
        self,
        pool: TrainingPool,
        train_idx: np.ndarray,
        val_idx: np.ndarray,
        max_pairs: int = 60,
        min_gap: float = 0.08,
        seed: int = 0,
    ) -> None:
        self.pool = pool
        rng = np.random.default_rng(seed)
        sources = np.array(pool.sources)
        self.groups: dict[str, tuple[np.ndarray, list[tuple[int, int]]]] = {}
        for source in sorted(set(pool.sources)):
            val = val_idx[sources[val_idx] == source]
            train = train_idx[sources[train_idx] == source]
            models = [k for k in range(len(pool.models)) if len(val) and pool.observed[val, k].mean() > 0.8]
            acc = {k: pool.outcome[train, k][pool.observed[train, k]].mean() for k in models}
            pairs = [(a, b) for a in models for b in models if acc[a] - acc[b] >= min_gap]
            if len(val) < 40 or not pairs:
                continue
            chosen = rng.choice(len(pairs), size=min(max_pairs, len(pairs)), replace=False)
            self.groups[source] = (val, [pairs[i] for i in chosen])

    def __call__(self, pair_scores) -> dict[str, float]:
        """`pair_scores(idx, a, b)` -> the router's scores of prompts idx for pair (a, b)."""
        out = {}
        observed, outcome = self.pool.observed, self.pool.outcome
        for source, (val, pairs) in self.groups.items():
            values = []
            for a, b in pairs:
                idx = val[observed[val, a] & observed[val, b]]
                ya, yb = outcome[idx, a], outcome[idx, b]
                if abs(ya.mean() - yb.mean()) < 0.03:  # no gap left to route for
                    continue
                values.append(apgr(routing_curve(pair_scores(idx, a, b), ya, yb)))
            out[f"pairs_apgr_{source}"] = float(np.mean(values))
        out["pairs_apgr_mean"] = float(np.mean(list(out.values())))
        return out
