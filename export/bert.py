"""The BERT router: MiniLM-L6 fine-tuned with a 3-class head (strong wins / tie / weak wins).

Labels: on each prompt, every observed pair of its topic group's (stronger, weaker) models in
the deployment regime (export.validation.RegimeValidator: the weaker model is usually right)
votes for one class; the prompt's target is the vote distribution (soft labels). Sources are
balanced.
The top `trainable_layers` encoder layers are fine-tuned; the lower ones stay frozen, which
keeps training within the CPU budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from export.encoder import MeanPooledEncoder
from export.mf import source_weights


@dataclass(frozen=True)
class BertConfig:
    epochs: int = 2
    lr: float = 5e-5
    head_lr: float = 1e-3
    batch_size: int = 32
    trainable_layers: int = 2
    # a per-source offset on the class logits, used in training only: how often a source's
    # labels say "tie" depends on its label type (1-10 judge scores rarely tie, 0/1
    # correctness often does), not on the prompt, and the offset keeps the head from
    # learning "chat-like prompt -> stronger wins" from that
    source_offsets: bool = True
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def regime_labels(
    outcome: np.ndarray, observed: np.ndarray, pairs_by_prompt: list[list[tuple[int, int]]]
) -> tuple[np.ndarray, np.ndarray]:
    """Soft [P(stronger wins), P(tie), P(weaker wins)] per prompt over its own model pairs
    (stronger first), counting only pairs that both have a label on the prompt."""
    labels = np.zeros((len(outcome), 3), dtype=np.float32)
    for i, pairs in enumerate(pairs_by_prompt):
        both = [(a, b) for a, b in pairs if observed[i, a] and observed[i, b]]
        votes = [np.sign(outcome[i, a] - outcome[i, b]) for a, b in both]
        if votes:
            v = np.array(votes)
            labels[i] = [(v > 0).mean(), (v == 0).mean(), (v < 0).mean()]
    return labels, labels.sum(1) > 0


class Classifier(torch.nn.Module):
    def __init__(self, encoder: MeanPooledEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(0.1)
        self.head = torch.nn.Linear(encoder.bert.config.hidden_size, 3)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pooled(input_ids, attention_mask)))


def _freeze_lower_layers(model: Classifier, trainable_layers: int) -> None:
    bert = model.encoder.bert
    for p in bert.embeddings.parameters():
        p.requires_grad = False
    layers = bert.encoder.layer
    for layer in layers[: len(layers) - trainable_layers]:
        for p in layer.parameters():
            p.requires_grad = False


def _batches(tokenizer: Tokenizer, texts: list[str], idx: np.ndarray, size: int, rng=None):
    """Length-bucketed batches: sort by length, chunk, then shuffle the chunk order."""
    lengths = np.array([len(tokenizer.encode(texts[i]).ids) for i in idx])
    ordered = idx[np.argsort(lengths, kind="stable")]
    chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
    if rng is not None:
        rng.shuffle(chunks)
    for chunk in chunks:
        enc = tokenizer.encode_batch([texts[i] for i in chunk])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        yield chunk, ids, mask


def probs_and_embeddings(
    model: Classifier, tokenizer: Tokenizer, texts: list[str], idx: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and fine-tuned normalised embeddings of texts[idx] (default: all),
    in that order."""
    model.eval()
    idx = np.arange(len(texts)) if idx is None else idx
    probs = np.zeros((len(texts), 3), dtype=np.float32)
    emb = np.zeros((len(texts), model.head.in_features), dtype=np.float32)
    with torch.inference_mode():
        for chunk, ids, mask in _batches(tokenizer, texts, idx, 64):
            pooled = model.pooled(ids, mask)
            probs[chunk] = torch.softmax(model.head(pooled), -1).numpy()
            emb[chunk] = torch.nn.functional.normalize(pooled, p=2.0, dim=-1).numpy()
    return probs[idx], emb[idx]


def train_bert(
    encoder: MeanPooledEncoder,
    tokenizer: Tokenizer,
    texts: list[str],
    labels: np.ndarray,
    sources: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    cfg: BertConfig,
    val_metric=None,
) -> tuple[Classifier, list[dict]]:
    """Fine-tune; after each epoch score the hold-out and keep the best epoch by `val_metric`
    (called with the probabilities of every val_idx prompt; higher is better; default: minus
    the cross-entropy on the labelled hold-out prompts)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = Classifier(encoder)
    _freeze_lower_layers(model, cfg.trainable_layers)
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": encoder_params, "lr": cfg.lr},
            {"params": model.head.parameters(), "lr": cfg.head_lr},
        ],
        weight_decay=0.01,
    )
    weights = torch.from_numpy(source_weights(sources, train_idx))
    names = sorted(set(sources))
    source_ids = torch.tensor([names.index(s) for s in sources])
    offsets = torch.nn.Embedding(len(names), 3)
    torch.nn.init.zeros_(offsets.weight)
    if cfg.source_offsets:
        opt.add_param_group({"params": offsets.parameters(), "lr": cfg.head_lr, "weight_decay": 0.0})
    Y = torch.from_numpy(labels)
    history: list[dict] = []
    best = (-float("inf"), None)
    for epoch in range(cfg.epochs):
        model.train()
        n_batches = (len(train_idx) + cfg.batch_size - 1) // cfg.batch_size
        bar = tqdm(
            _batches(tokenizer, texts, train_idx, cfg.batch_size, rng),
            total=n_batches,
            desc=f"bert epoch {epoch + 1}/{cfg.epochs}",
        )
        for chunk, ids, mask in bar:
            b = torch.from_numpy(chunk)
            logits = model(ids, mask)
            if cfg.source_offsets:
                logits = logits + offsets(source_ids[b])
            logp = torch.log_softmax(logits, -1)
            loss = (-(Y[b] * logp).sum(-1) * weights[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        probs, _ = probs_and_embeddings(model, tokenizer, texts, val_idx)
        labelled = labels[val_idx].sum(-1) > 0  # hold-out prompts without a label pair: no CE
        ce = float(-(labels[val_idx] * np.log(probs + 1e-9)).sum(-1)[labelled].mean())
        metric = val_metric(probs) if val_metric else -ce
        history.append({"epoch": epoch + 1, "val_cross_entropy": ce, "val_metric": metric})
        if metric > best[0]:
            best = (metric, {k: v.clone() for k, v in model.state_dict().items()})
    model.load_state_dict(best[1])
    model.eval()
    return model, history
