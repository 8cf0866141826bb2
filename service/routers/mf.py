"""The matrix-factorisation router: one ONNX run gives every known model's logit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.errors import UnknownModelError
from service.routers.onnx_router import OnnxRouter
from service.routers.tilt import check_tilt, sigmoid, tilted

LOGITS = "logits"
SCORING_RULES = ("bradley_terry", "expected_gain", "difficulty_tilted")
EMBEDDING = "embedding"


def win_rate(logits: np.ndarray, strong: int, weak: int, scoring: str, tilt: float = 0.0) -> np.ndarray:
    """P(strong beats weak) per row of `logits` under a scoring rule (see MFRouter); under
    "difficulty_tilted" the last column is the prompt's standardised difficulty. The export
    pipeline scores its candidates with this same function."""
    ls, lw = logits[:, strong].astype(np.float64), logits[:, weak].astype(np.float64)
    if scoring == "bradley_terry":
        return sigmoid(ls - lw)
    if scoring == "difficulty_tilted":
        return tilted(ls - lw, logits[:, -1].astype(np.float64), tilt)
    return 0.5 + 0.5 * (sigmoid(ls) - sigmoid(lw))


class MFRouter(OnnxRouter):
    """Scores P(strong beats weak | prompt) from per-model logits.

    The manifest's `scoring` says how two logits become a win rate:
    - "bradley_terry": sigmoid(logit_strong - logit_weak) (RouteLLM's MF);
    - "expected_gain": 0.5 + 0.5 * (sigmoid(logit_strong) - sigmoid(logit_weak)), the win rate
      with ties counted as half when sigmoid(logit_k) is P(model k answers well);
    - "difficulty_tilted": sigmoid((logit_strong - logit_weak + tilt * difficulty) / (1 + tilt)),
      where the graph's last logit column is the prompt's standardised difficulty (harder is
      higher) and `difficulty_tilt` comes from the manifest: the harder the prompt, the more
      the stronger model of the pair is worth. Dividing by 1 + tilt makes it a weighted mean of
      the MF logit gap and the difficulty, which keeps thresholds readable.
    A model may have a declared stand-in (e.g. a GPT-4-class model with more labels).
    """

    kind = "mf"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        raw = self.manifest.raw
        self.models: list[str] = list(raw["models"])
        self._index = {m: i for i, m in enumerate(self.models)}
        self._aliases: dict[str, str] = dict(raw.get("aliases", {}))
        self._stand_ins: dict[str, str] = dict(raw.get("stand_ins", {}))
        self.scoring: str = raw.get("scoring", "bradley_terry")
        if self.scoring not in SCORING_RULES:
            raise ValueError(f"unknown scoring rule {self.scoring!r} in {self.manifest.directory}")
        self.tilt = check_tilt(raw, self.manifest.directory)

    def canonical(self, model: str) -> str:
        """Canonical model name, or UnknownModelError listing the known ones."""
        for candidate in (model, model.split("/")[-1], model.lower(), model.split("/")[-1].lower()):
            name = self._aliases.get(candidate, candidate)
            if name in self._index:
                return name
        raise UnknownModelError(model, self.models)

    def column(self, model: str) -> int:
        name = self.canonical(model)
        return self._index[self._stand_ins.get(name, name)]

    def logits(self, prompts: Sequence[str]) -> np.ndarray:
        """[n_prompts, n_models] logits in manifest model order (plus the difficulty column
        under "difficulty_tilted")."""
        return self.run_chunked(prompts, [LOGITS])[0]

    def scores_from_logits(self, logits: np.ndarray, strong: int, weak: int) -> np.ndarray:
        return win_rate(logits, strong, weak, self.scoring, self.tilt)

    def run_rows(self, prompts: Sequence[str], instance: int = 0) -> np.ndarray:
        return self.run(prompts, [LOGITS], instance)[0]

    def scores_from_rows(self, rows: np.ndarray, strong_model: str, weak_model: str) -> np.ndarray:
        return self.scores_from_logits(rows, self.column(strong_model), self.column(weak_model))

    def score(
        self,
        prompts: Sequence[str],
        strong_model: str | None = None,
        weak_model: str | None = None,
    ) -> np.ndarray:
        strong, weak = self.default_pair
        s, w = self.column(strong_model or strong), self.column(weak_model or weak)
        return self.scores_from_logits(self.logits(prompts), s, w)
