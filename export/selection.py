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

from export.data import TrainingPool
from export.difficulty import fit_difficulty, predict_difficulty
from export.mf import MFConfig, predict_logits, train_mf
from export.validation import RegimeValidator

TILTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)


def leave_one_group_out(
    pool: TrainingPool,
    emb: np.ndarray,
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
        tilt_feature = predict_difficulty(fit_difficulty(emb, pool.outcome, pool.observed, train), emb)
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
