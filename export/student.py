"""A layer-reduced MiniLM distilled to what the mf router reads from the full encoder.

The mf router's outputs are linear in the prompt embedding (every model's logit, and the
difficulty up to a length term), so the student is trained on those read-outs, each scaled by
the teacher's spread, plus a cosine term that keeps the embedding itself close. Distillation
text is label-free: training-split prompts and random contiguous token crops of them (more
inputs of the lengths the service sees, from the same prompts; never eval/).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm import tqdm

from export.encoder import MeanPooledEncoder

HIDDEN = 384


@dataclass(frozen=True)
class StudentConfig:
    layers: tuple[int, ...] = (0, 5)  # teacher layers kept, in order
    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 32
    crops_per_prompt: int = 2
    min_crop_tokens: int = 4
    warmup_steps: int = 200
    weight_decay: float = 0.01
    pair_weight: float = 2.0  # the default pair's tilted score counts double among the read-outs
    seed: int = 0

    def to_dict(self) -> dict:
        return {**asdict(self), "layers": list(self.layers)}


def keep_layers(encoder: MeanPooledEncoder, layers: Sequence[int]) -> MeanPooledEncoder:
    """The encoder with only `layers` (teacher weights as the starting point)."""
    blocks = encoder.bert.encoder.layer
    encoder.bert.encoder.layer = torch.nn.ModuleList([blocks[i] for i in layers])
    encoder.bert.config.num_hidden_layers = len(layers)
    return encoder


def readout_matrix(
    logit_map: torch.Tensor,
    difficulty_map: torch.Tensor,
    pair: tuple[int, int],
    tilt: float,
    teacher_emb: np.ndarray,
    pair_weight: float,
) -> torch.Tensor:
    """Rows r such that ||R (e_student - e_teacher)||^2 is the read-out error, in units of the
    teacher's own spread: every logit centred across models (only differences are ever used),
    the difficulty, and the default pair's tilted margin.

    logit_map: [n_models, hidden] with logits = logit_map @ e + const; difficulty_map: [hidden]."""
    centred = logit_map - logit_map.mean(0, keepdim=True)
    strong, weak = pair
    margin = (logit_map[strong] - logit_map[weak] + tilt * difficulty_map) / (1.0 + tilt)
    emb = torch.as_tensor(teacher_emb, dtype=torch.float32)

    def spread(rows: torch.Tensor) -> float:
        return float((emb @ rows.T).std()) or 1.0

    return torch.cat(
        [
            centred / spread(centred) / np.sqrt(len(centred)),
            (difficulty_map / spread(difficulty_map[None]))[None],
            (margin / spread(margin[None]))[None] * pair_weight,
        ]
    )


def token_crops(
    token_ids: Sequence[Sequence[int]], per_prompt: int, max_tokens: int, min_tokens: int, seed: int
) -> list[list[int]]:
    """Random contiguous spans of each prompt's tokens, re-wrapped in [CLS] ... [SEP]."""
    rng = np.random.default_rng(seed)
    crops = []
    for ids in token_ids:
        cls, body, sep = ids[0], list(ids[1:-1]), ids[-1]
        if len(body) < min_tokens + 2:
            continue
        for _ in range(per_prompt):
            n = int(rng.integers(min_tokens, min(len(body), max_tokens - 2) + 1))
            start = int(rng.integers(0, len(body) - n + 1))
            crops.append([cls, *body[start : start + n], sep])
    return crops


def padded(seqs: Sequence[Sequence[int]], rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(seqs[j]) for j in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for k, j in enumerate(rows):
        ids[k, : len(seqs[j])] = torch.as_tensor(seqs[j])
        mask[k, : len(seqs[j])] = 1
    return ids, mask


def embed_ids(
    encoder: torch.nn.Module, seqs: Sequence[Sequence[int]], batch_size: int = 64, desc: str = "embedding"
) -> np.ndarray:
    """Embeddings of token-id sequences, batched by length, in input order."""
    encoder.eval()
    out = np.zeros((len(seqs), HIDDEN), dtype=np.float32)
    order = np.argsort([len(s) for s in seqs], kind="stable")
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
            rows = order[start : start + batch_size]
            out[rows] = encoder(*padded(seqs, rows)).numpy()
    return out


def distill(
    student: MeanPooledEncoder,
    seqs: Sequence[Sequence[int]],
    targets: np.ndarray,
    readout: torch.Tensor,
    cfg: StudentConfig,
    evaluate: Callable[[MeanPooledEncoder], dict],
) -> tuple[MeanPooledEncoder, list[dict]]:
    """Train `student` towards the teacher's `targets`; `evaluate` runs after each epoch and
    returns metrics with a "score" (higher is better). Returns the best epoch's student."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    lengths = np.array([len(s) for s in seqs])
    target = torch.as_tensor(targets, dtype=torch.float32)
    optimiser = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(seqs) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, s / cfg.warmup_steps) * max(0.05, 1.0 - s / steps)
    )
    history, best_state, best_score = [], None, -np.inf
    for epoch in range(cfg.epochs):
        student.train()
        started = time.time()
        # length-bucketed batches (little padding), in shuffled order
        order = np.argsort(lengths + rng.random(len(seqs)) * 8)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        rng.shuffle(batches)
        total = 0.0
        for rows in tqdm(batches, desc=f"distil epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False):
            emb = student(*padded(seqs, rows))
            goal = target[rows]
            loss = (1.0 - (emb * goal).sum(-1)).mean() + ((emb - goal) @ readout.T).pow(2).sum(-1).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach())
        metrics = {"epoch": epoch + 1, "loss": total / len(batches), **evaluate(student)}
        metrics["seconds"] = round(time.time() - started, 1)
        history.append(metrics)
        print(
            f"[mf-fast] epoch {epoch + 1}: "
            + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        )
        if metrics["score"] > best_score:
            best_score = metrics["score"]
            best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    student.load_state_dict(best_state)
    return student.eval(), history
