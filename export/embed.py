"""Embed prompts with the torch encoder, in length-sorted batches, cached on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from export.encoder import MeanPooledEncoder


def tokenize(tokenizer: Tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    encodings = tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
    return ids, mask


def embed_texts(
    encoder: MeanPooledEncoder,
    tokenizer: Tokenizer,
    texts: list[str],
    batch_size: int = 64,
    desc: str = "embedding",
) -> np.ndarray:
    # sort by length so each batch pads little; restore the input order at the end
    lengths = [len(e.ids) for e in tokenizer.encode_batch(texts)]
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(texts), encoder.bert.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, unit="batch"):
            idx = order[start : start + batch_size]
            ids, mask = tokenize(tokenizer, [texts[i] for i in idx])
            out[idx] = encoder(ids, mask).numpy()
    return out


def cached_embeddings(
    cache_dir: Path,
    key_parts: list[str],
    texts: list[str],
    compute,
) -> np.ndarray:
    """Load embeddings keyed on (texts, key_parts), or compute and store them."""
    digest = hashlib.sha256("\x00".join(key_parts + texts).encode()).hexdigest()[:20]
    path = cache_dir / f"emb-{digest}.npy"
    if path.is_file():
        return np.load(path)
    values = compute()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, values)
    tmp.replace(path)
    return values
