"""The training pool in ../shared/data/train: prompts, correctness, judge scores, canonical names.

Everything is read in place; nothing is copied into the project.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TRAIN_FILES = (
    "prompts.jsonl.gz",
    "correctness.csv.gz",
    "scores.csv.gz",
    "battles.csv.gz",
    "model_aliases.json",
)
CHAT_SOURCES = ("arena_bench_v1", "fastchat_vicuna_bench")


@dataclass
class TrainingPool:
    """Prompts with per-(prompt, model) outcomes in [0, 1] and an observation mask.

    outcome[i, k] is correctness (0/1) or a normalised judge score ((score - 1) / 9);
    observed[i, k] says whether model k has a label on prompt i.
    """

    uids: list[str]
    texts: list[str]
    sources: list[str]
    models: list[str]
    outcome: np.ndarray
    observed: np.ndarray
    is_judge: np.ndarray  # per prompt: labels come from judge scores (open-ended chat)
    # per prompt: its topic group, the source or, for MMLU-Pro, "mmlu_pro:<category>"
    groups: list[str] = field(default_factory=list)
    battles: list[tuple[int, int, int, float]] = field(default_factory=list)  # (prompt, a, b, y)

    def model_index(self, name: str) -> int:
        return self.models.index(name)

    def summary(self) -> dict:
        return {
            "prompts": len(self.uids),
            "models": len(self.models),
            "labels": int(self.observed.sum()),
            "judge_battles": len(self.battles),
            "prompts_per_source": dict(Counter(self.sources)),
            "sha256": self.fingerprint(),
        }

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update("\n".join(self.uids).encode())
        digest.update("\n".join(self.models).encode())
        digest.update(np.ascontiguousarray(self.outcome).tobytes())
        return digest.hexdigest()[:16]


def check_layout(data_dir: Path) -> None:
    missing = [name for name in TRAIN_FILES if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"training data not found in {data_dir}: missing {', '.join(missing)}. "
            f"Expected {data_dir}/{{{', '.join(TRAIN_FILES)}}} (see ../shared/data/README.md)"
        )


def canonical_name(aliases: dict[str, str], name: str) -> str:
    return aliases.get(name, name.split("/")[-1].lower())


def load_pool(data_dir: str | Path) -> TrainingPool:
    data_dir = Path(data_dir)
    check_layout(data_dir)
    aliases: dict[str, str] = json.loads((data_dir / "model_aliases.json").read_text())
    with gzip.open(data_dir / "prompts.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    uids = [r["uid"] for r in rows]
    index = {uid: i for i, uid in enumerate(uids)}

    labels: dict[tuple[int, str], list[float]] = {}
    with gzip.open(data_dir / "correctness.csv.gz", "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["uid"] in index:
                key = (index[r["uid"]], canonical_name(aliases, r["model"]))
                labels.setdefault(key, []).append(float(r["correct"]))
    with gzip.open(data_dir / "scores.csv.gz", "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["uid"] in index and r["score"].strip():  # a few judgements have no score
                key = (index[r["uid"]], canonical_name(aliases, r["model"]))
                labels.setdefault(key, []).append((float(r["score"]) - 1.0) / 9.0)

    models = sorted({model for _, model in labels})
    m_index = {m: k for k, m in enumerate(models)}
    outcome = np.zeros((len(uids), len(models)), dtype=np.float32)
    observed = np.zeros_like(outcome, dtype=bool)
    for (i, model), values in labels.items():
        # aliases can merge two spellings of one model: average their labels
        outcome[i, m_index[model]] = float(np.mean(values))
        observed[i, m_index[model]] = True

    battles: list[tuple[int, int, int, float]] = []
    with gzip.open(data_dir / "battles.csv.gz", "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["uid"] not in index:
                continue
            a = m_index.get(canonical_name(aliases, r["model_a"]))
            b = m_index.get(canonical_name(aliases, r["model_b"]))
            if a is None or b is None or a == b:
                continue
            y = {"model_a": 1.0, "model_b": 0.0, "tie": 0.5}[r["winner"]]
            battles.append((index[r["uid"]], a, b, y))

    sources = [r["source"] for r in rows]
    groups = [f"{r['source']}:{r['category']}" if r.get("category") else r["source"] for r in rows]
    return TrainingPool(
        uids=uids,
        texts=[r["text"] for r in rows],
        sources=sources,
        models=models,
        outcome=outcome,
        observed=observed,
        is_judge=np.array([s in CHAT_SOURCES for s in sources]),
        battles=battles,
        groups=groups,
    )


def split_prompts(pool: TrainingPool, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A prompt-level split, stratified by source, so no prompt is on both sides."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    sources = np.array(pool.sources)
    for source in sorted(set(pool.sources)):
        idx = np.flatnonzero(sources == source)
        rng.shuffle(idx)
        cut = max(1, int(round(len(idx) * holdout)))
        val.extend(idx[:cut])
        train.extend(idx[cut:])
    return np.sort(np.array(train)), np.sort(np.array(val))
