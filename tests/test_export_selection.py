"""Training-side choices on a small synthetic pool: the deployment-regime validation, the
BERT router's regime labels, and the difficulty regression behind the MF router's tilt."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.bert import regime_labels  # noqa: E402
from export.data import TrainingPool  # noqa: E402
from export.difficulty import fit_difficulty, predict_difficulty  # noqa: E402
from export.validation import RegimeValidator, regime_pairs  # noqa: E402


def synthetic_pool(n: int = 400, seed: int = 0) -> tuple[TrainingPool, np.ndarray]:
    """Six models of rising ability on one topic; prompt difficulty is the first embedding
    coordinate, so a router that knows it can route well."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 8)).astype(np.float32)
    ability = np.array([-2.5, 0.5, 1.0, 1.5, 2.2, 3.0])
    p_correct = 1 / (1 + np.exp(-(ability[None, :] - 1.5 * emb[:, :1])))
    outcome = (rng.random(p_correct.shape) < p_correct).astype(np.float32)
    pool = TrainingPool(
        uids=[f"q{i}" for i in range(n)],
        texts=[f"prompt {i}" for i in range(n)],
        sources=["topic"] * n,
        models=["tiny", "small", "mid", "upper", "large", "huge"],
        outcome=outcome,
        observed=np.ones_like(outcome, dtype=bool),
        is_judge=np.zeros(n, dtype=bool),
        groups=["topic"] * n,
    )
    return pool, emb


def test_regime_pairs_keep_only_usually_right_weaker_models() -> None:
    pool, _ = synthetic_pool()
    idx = np.arange(len(pool.uids))
    acc = pool.outcome.mean(0)
    pairs = regime_pairs(pool, idx, idx, weak_min=0.5, min_gap=0.08)
    assert pairs, "the synthetic pool has regime pairs"
    for a, b in pairs:
        assert acc[a] - acc[b] >= 0.08 and acc[b] >= 0.5
    assert all(b != 0 for _, b in pairs)  # "tiny" is mostly wrong: never the weaker model
    assert len(regime_pairs(pool, idx, idx, weak_min=0.99, min_gap=0.08)) == 0


def test_regime_validator_ranks_an_informed_router_above_random_and_inverted() -> None:
    pool, emb = synthetic_pool(n=1200)
    idx = np.arange(len(pool.uids))
    validator = RegimeValidator(pool, idx[:400], idx[400:], max_pairs=10)
    difficulty = emb[:, 0].astype(np.float64)
    rng = np.random.default_rng(1)
    noise = rng.random(len(idx))
    informed = validator(lambda i, a, b: difficulty[i])["regime_apgr_mean"]
    random = validator(lambda i, a, b: noise[i])["regime_apgr_mean"]
    inverted = validator(lambda i, a, b: -difficulty[i])["regime_apgr_mean"]
    assert informed > random + 0.05 and random > inverted + 0.05
    assert abs(random - 0.5) < 0.05


def test_regime_labels_are_vote_shares_over_observed_pairs() -> None:
    outcome = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    observed = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=bool)
    pairs = [[(0, 1), (2, 1)], [(0, 1), (2, 1)], [(0, 1)]]
    labels, has = regime_labels(outcome, observed, pairs)
    np.testing.assert_allclose(labels[0], [1.0, 0.0, 0.0])  # both pairs: stronger right, weaker wrong
    np.testing.assert_allclose(labels[1], [0.5, 0.5, 0.0])  # one win, one tie
    assert has.tolist() == [True, True, False]  # prompt 2 has no pair with both labels
    np.testing.assert_allclose(labels[2], 0.0)


def test_difficulty_is_standardised_on_train_and_harder_is_higher() -> None:
    pool, emb = synthetic_pool(n=800)
    train = np.arange(600)
    layer = fit_difficulty(emb, pool.outcome, pool.observed, train)
    z = predict_difficulty(layer, emb)
    assert abs(z[train].mean()) < 1e-4 and abs(z[train].std() - 1) < 1e-3
    # the first coordinate drives difficulty: the prediction follows it on unseen prompts
    assert np.corrcoef(z[600:], emb[600:, 0])[0, 1] > 0.8
