"""RouteLLM's matrix-factorisation router over frozen prompt embeddings, with a shared
difficulty term (IRT-style), trained on correctness and judge-score outcomes of the pool.

logit_k(q) = w . (normalize(P_k) * W e(q)) + ability_k - difficulty(q)

Pairs (correctness pairs and judge battles, ties as 0.5) train the Bradley-Terry form
P(a beats b | q) = sigmoid(logit_a - logit_b); per-model outcomes train sigmoid(logit_k) as
P(model k answers q well), which is what makes the shared difficulty identifiable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm


@dataclass(frozen=True)
class MFConfig:
    dim: int = 128
    epochs: int = 300
    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_prompts: int = 512
    pair_weight: float = 1.0  # weight of the pairwise (Bradley-Terry) loss
    point_weight: float = 1.0  # weight of the per-model outcome loss
    difficulty: bool = True
    dropout: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class MFHead(torch.nn.Module):
    def __init__(self, n_models: int, text_dim: int, cfg: MFConfig) -> None:
        super().__init__()
        self.P = torch.nn.Parameter(torch.randn(n_models, cfg.dim) * 0.1)
        self.text_proj = torch.nn.Linear(text_dim, cfg.dim, bias=False)
        self.classifier = torch.nn.Linear(cfg.dim, 1, bias=False)
        self.ability = torch.nn.Parameter(torch.zeros(n_models))
        self.difficulty = torch.nn.Linear(text_dim, 1) if cfg.difficulty else None
        self.dropout = torch.nn.Dropout(cfg.dropout)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """[batch, text_dim] -> logits [batch, n_models]."""
        proj = self.dropout(self.text_proj(emb))  # [B, d]
        models = torch.nn.functional.normalize(self.P, dim=-1)  # [K, d]
        # w . (P_k * Wq) == (Wq * w) @ P_k^T : one matmul for every model at once
        logits = (proj * self.classifier.weight) @ models.T + self.ability
        if self.difficulty is not None:
            logits = logits - self.difficulty(emb)
        return logits


def source_weights(sources: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-prompt weights so each source contributes equally (mmlu_pro would swamp the rest)."""
    weights = np.zeros(len(sources), dtype=np.float32)
    present = sorted(set(sources[idx]))
    for source in present:
        members = idx[sources[idx] == source]
        weights[members] = len(idx) / (len(present) * len(members))
    return weights


def train_mf(
    emb: np.ndarray,
    outcome: np.ndarray,
    observed: np.ndarray,
    sources: np.ndarray,
    train_idx: np.ndarray,
    cfg: MFConfig,
    val_idx: np.ndarray | None = None,
    progress: bool = True,
) -> MFHead:
    """Train on train_idx; with val_idx, keep the epoch with the lowest hold-out loss."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = MFHead(outcome.shape[1], emb.shape[1], cfg)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    prompt_w = torch.from_numpy(source_weights(sources, train_idx))
    E = torch.from_numpy(emb)
    Y = torch.from_numpy(outcome)
    M = torch.from_numpy(observed.astype(np.float32))
    val_w = torch.from_numpy(source_weights(sources, val_idx)) if val_idx is not None else None

    def batch_loss(b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        logits = head(E[b])
        y, m, w = Y[b], M[b], weights[b]
        loss = torch.zeros(())
        if cfg.point_weight:
            point = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
            per_prompt = (point * m).sum(1) / m.sum(1).clamp(min=1)
            loss = loss + cfg.point_weight * (per_prompt * w).mean()
        if cfg.pair_weight:
            # every observed pair on a prompt: a beats b (1), ties (0.5), loses (0)
            diff = logits[:, :, None] - logits[:, None, :]
            target = 0.5 + 0.5 * torch.sign(y[:, :, None] - y[:, None, :])
            pair_mask = m[:, :, None] * m[:, None, :]
            pair = torch.nn.functional.binary_cross_entropy_with_logits(diff, target, reduction="none")
            per_prompt = (pair * pair_mask).sum((1, 2)) / pair_mask.sum((1, 2)).clamp(min=1)
            loss = loss + cfg.pair_weight * (per_prompt * w).mean()
        return loss

    best = (float("inf"), None)
    bar = tqdm(range(cfg.epochs), desc=f"mf seed {cfg.seed}", disable=not progress)
    for epoch in bar:
        head.train()
        order = rng.permutation(train_idx)
        for start in range(0, len(order), cfg.batch_prompts):
            loss = batch_loss(torch.from_numpy(order[start : start + cfg.batch_prompts]), prompt_w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if val_idx is not None and (epoch + 1) % 5 == 0:
            head.eval()
            with torch.no_grad():
                val_loss = float(batch_loss(torch.from_numpy(val_idx), val_w))
            bar.set_postfix(val_loss=f"{val_loss:.4f}")
            if val_loss < best[0]:
                best = (val_loss, {k: v.clone() for k, v in head.state_dict().items()})
    if best[1] is not None:
        head.load_state_dict(best[1])
    head.eval()
    return head


def predict_logits(head: MFHead, emb: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return head(torch.from_numpy(emb)).numpy()
