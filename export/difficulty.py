"""A prompt-difficulty estimate for the MF router's difficulty tilt.

Difficulty is one minus the mean outcome over every model labelled on a prompt; a ridge
regression predicts it from the frozen prompt embedding. The result is standardised on the
training prompts (mean 0, sd 1, harder is higher) and exported as a linear layer, so the
ONNX graph emits it next to the per-model logits.
"""

from __future__ import annotations

import numpy as np
import torch

RIDGE_LAMBDA = 10.0


def mean_outcome(outcome: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Per prompt: the mean outcome over the models labelled on it (0 where none is)."""
    return (outcome * observed).sum(1) / np.maximum(observed.sum(1), 1)


def fit_difficulty(
    emb: np.ndarray,
    outcome: np.ndarray,
    observed: np.ndarray,
    train_idx: np.ndarray,
    lam: float = RIDGE_LAMBDA,
) -> torch.nn.Linear:
    """Ridge regression of difficulty on the embedding (intercept not penalised), returned as
    a Linear(text_dim, 1) whose output is standardised over `train_idx`."""
    idx = train_idx[observed[train_idx].any(1)]
    x = np.hstack([emb[idx], np.ones((len(idx), 1))]).astype(np.float64)
    y = 1.0 - mean_outcome(outcome, observed)[idx].astype(np.float64)
    penalty = lam * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    beta = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    pred = x @ beta
    mu, sd = pred.mean(), pred.std()
    layer = torch.nn.Linear(emb.shape[1], 1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(beta[:-1] / sd).float()[None, :])
        layer.bias.fill_(float((beta[-1] - mu) / sd))
    return layer.eval()


def predict_difficulty(layer: torch.nn.Linear, emb: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return layer(torch.from_numpy(emb)).numpy()[:, 0].astype(np.float64)
