"""Choose the MF router's variant and difficulty tilt by leave-one-topic-out, in the regime
a router is deployed in (see RegimeValidator).

A deployed router meets prompts from topics and datasets it was not trained on (the RouteLLM
benchmarks are all outside the pool). So each topic group is held out in turn: the MF head
and the difficulty regression are fitted on the other groups, and the held-out group is
routed for every (stronger, weaker) pair whose weaker model is usually right there.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from export.data import TrainingPool
from export.difficulty import fit_difficulty, predict_difficulty
from export.mf import MFConfig, predict_logits, source_weights, train_mf
from export.validation import RegimeValidator

TILTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def leave_one_group_out(
    pool: TrainingPool,
    emb: np.ndarray,
    n_tokens: np.ndarray,
    variants: dict[str, MFConfig],
    epochs: int,
    seed: int,
    tilts: tuple[float, ...] = TILTS,
) -> tuple[dict, list[dict]]:
    """Returns the best (variant, tilt) row and the whole table (per-group APGRs included)."""
    groups = np.array(pool.groups)
    sources = np.array(pool.sources)
    per_group: dict[tuple[str, float], dict[str, float]] = {}
    for group in sorted(set(pool.groups)):
        test = np.flatnonzero(groups == group)
        train = np.flatnonzero(groups != group)
        validator = RegimeValidator(pool, test, test)  # pairs by the group's own accuracies
        if not validator.groups:
            continue
        difficulty = fit_difficulty(emb, n_tokens, pool.outcome, pool.observed, train)
        tilt_feature = predict_difficulty(difficulty, emb, n_tokens)
        for name, base in variants.items():
            cfg = dataclasses.replace(base, epochs=epochs, seed=seed)
            head = train_mf(emb, pool.outcome, pool.observed, sources, train, cfg, None, False)
            logits = predict_logits(head, emb)
            for tilt in tilts:
                result = validator(
                    lambda i, a, b, lg=logits, t=tilt, z=tilt_feature: lg[i, a] - lg[i, b] + t * z[i]
                )
                per_group.setdefault((name, tilt), {})[group] = result["regime_apgr_mean"]
        figures = " ".join(f"{k[0]}/{k[1]}={v[group]:.3f}" for k, v in per_group.items() if group in v)
        print(f"  left out {group}: {figures}")
    table = [
        {"variant": name, "tilt": tilt, "logo_regime_apgr": float(np.mean(list(v.values()))), "groups": v}
        for (name, tilt), v in per_group.items()
    ]
    return max(table, key=lambda r: r["logo_regime_apgr"]), table


def bert_tilt_by_proxy(
    pool: TrainingPool,
    emb: np.ndarray,
    n_tokens: np.ndarray,
    labels: np.ndarray,
    has_label: np.ndarray,
    tilts: tuple[float, ...] = TILTS,
) -> tuple[dict, list[dict]]:
    """The BERT router's difficulty tilt, by leave-one-topic-out on a frozen-encoder stand-in.

    Fine-tuning the encoder once per held-out group would take hours on CPU, so the stand-in
    is the BERT router's own 3-class head on its own labels, fitted on the frozen embedding.
    Its logit(P(stronger wins)) is standardised on the training groups and tilted towards
    the difficulty regression exactly as the runtime does; the held-out group is scored with
    the regime pairs. Returns the best row and the whole table.
    """
    groups = np.array(pool.groups)
    sources = np.array(pool.sources)
    per_tilt: dict[float, dict[str, float]] = {t: {} for t in tilts}
    for group in sorted(set(pool.groups)):
        test = np.flatnonzero(groups == group)
        train = np.flatnonzero(groups != group)
        validator = RegimeValidator(pool, test, test)
        if not validator.groups:
            continue
        fit_on = train[has_label[train]]
        head = fit_softmax_head(emb[fit_on], labels[fit_on], source_weights(sources, fit_on)[fit_on])
        with torch.inference_mode():
            p = torch.softmax(head(torch.from_numpy(emb).float()), -1).numpy()[:, 0].astype(np.float64)
        logit = np.log(np.clip(p, 1e-7, 1 - 1e-7) / np.clip(1 - p, 1e-7, 1))
        z = (logit - logit[train].mean()) / logit[train].std()
        difficulty = predict_difficulty(
            fit_difficulty(emb, n_tokens, pool.outcome, pool.observed, train), emb, n_tokens
        )
        for tilt in tilts:
            score = (z + tilt * difficulty) / (1 + tilt)
            per_tilt[tilt][group] = validator(lambda i, a, b, s=score: s[i])["regime_apgr_mean"]
        print(f"  left out {group}: " + " ".join(f"{t}={v[group]:.3f}" for t, v in per_tilt.items()))
    table = [
        {"tilt": tilt, "logo_regime_apgr": float(np.mean(list(v.values()))), "groups": v}
        for tilt, v in per_tilt.items()
    ]
    return max(table, key=lambda r: r["logo_regime_apgr"]), table


def fit_softmax_head(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1e-3) -> torch.nn.Linear:
    """Weighted soft-label multinomial logistic regression (L-BFGS) on fixed features."""
    torch.manual_seed(0)
    xt, yt, wt = (torch.from_numpy(np.asarray(a, np.float32)) for a in (x, y, weight))
    head = torch.nn.Linear(x.shape[1], y.shape[1])
    opt = torch.optim.LBFGS(head.parameters(), max_iter=300)

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(head(xt), -1)
        loss = (-(yt * logp).sum(-1) * wt).sum() / wt.sum() + l2 * (head.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return head.eval()
