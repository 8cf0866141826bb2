"""Training-side choices on a small synthetic pool: the deployment-regime validation, the
BERT router's regime labels, and the difficulty regression behind the MF router's tilt."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from export.bert import regime_labels  # noqa: E402
from export.data import TrainingPool  # noqa: E402
from export.difficulty import fit_difficulty, predict_difficulty  # noqa: E402
from export.selection import bert_tilt_by_proxy  # noqa: E402
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
    n_tokens = np.full(len(emb), 40.0)
    train = np.arange(600)
    head = fit_difficulty(emb, n_tokens, pool.outcome, pool.observed, train)
    z = predict_difficulty(head, emb, n_tokens)
    assert abs(z[train].mean()) < 1e-4 and abs(z[train].std() - 1) < 1e-3
    # the first coordinate drives difficulty: the prediction follows it on unseen prompts
    assert np.corrcoef(z[600:], emb[600:, 0])[0, 1] > 0.8


def test_difficulty_learns_length_and_the_graph_reads_it_from_the_mask() -> None:
    rng = np.random.default_rng(1)
    pool, emb = synthetic_pool(n=800)
    n_tokens = rng.integers(8, 128, size=len(emb)).astype(np.float64)
    # longer prompts are harder: every model fails the longest quarter more often
    long = n_tokens > np.quantile(n_tokens, 0.75)
    pool.outcome[long] *= (rng.random(pool.outcome[long].shape) < 0.5).astype(np.float32)
    emb_flat = emb.copy()
    emb_flat[:, 0] = 0.0  # no embedding signal left: only length can explain difficulty
    train = np.arange(600)
    head = fit_difficulty(emb_flat, n_tokens, pool.outcome, pool.observed, train)
    z = predict_difficulty(head, emb_flat, n_tokens)
    assert z[600:][long[600:]].mean() > z[600:][~long[600:]].mean() + 0.5
    # the exported module counts tokens from the attention mask and gives the same numbers
    mask = (np.arange(128)[None, :] < n_tokens[:, None]).astype(np.int64)
    with torch.inference_mode():
        graph_z = head(torch.from_numpy(emb_flat), torch.from_numpy(mask)).numpy()[:, 0]
    np.testing.assert_allclose(graph_z, z, atol=1e-4)


def test_bert_tilt_leans_on_difficulty_when_the_class_labels_carry_no_signal() -> None:
    pool, emb = synthetic_pool(n=800)
    pool.groups = ["a" if i % 2 else "b" for i in range(len(emb))]
    rng = np.random.default_rng(2)
    noise = rng.dirichlet(np.ones(3), size=len(emb)).astype(np.float32)  # labels unrelated to prompts
    best, table = bert_tilt_by_proxy(
        pool, emb, np.full(len(emb), 30.0), noise, np.ones(len(emb), bool), tilts=(0.0, 4.0)
    )
    by_tilt = {row["tilt"]: row["logo_regime_apgr"] for row in table}
    assert set(by_tilt) == {0.0, 4.0} and set(table[0]["groups"]) == {"a", "b"}
    assert best["tilt"] == 4.0 and by_tilt[4.0] > by_tilt[0.0] + 0.05
