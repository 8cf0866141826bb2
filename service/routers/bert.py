"""The BERT-style classifier router: P(strong wins), P(tie), P(weak wins) per prompt."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.routers.onnx_router import OnnxRouter
from service.routers.tilt import check_tilt, standardised_margin, tilted

PROBS = "probs"
DIFFICULTY = "difficulty"
SCORING_RULES = ("class_probability", "difficulty_tilted")


class BertRouter(OnnxRouter):
    """The score builds on P(strong wins), so ties count for the cheap model (as in RouteLLM).

    The manifest's `scoring` says how a row becomes a win rate:
    - "class_probability": P(strong wins) itself;
    - "difficulty_tilted": the graph also emits the prompt's standardised difficulty, and
      score = sigmoid((z + tilt * difficulty) / (1 + tilt)), where z is logit(P(strong wins))
      standardised on the training prompts (`strong_logit` mean and sd in the manifest): the
      same rule as the MF router's, on the classifier's own margin.

    The classifier was trained for a tier of strong models against a tier of weak ones, so it
    accepts any (strong, weak) names: they do not change the score.
    """

    kind = "bert"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        raw = self.manifest.raw
        self.scoring: str = raw.get("scoring", "class_probability")
        if self.scoring not in SCORING_RULES:
            raise ValueError(f"unknown scoring rule {self.scoring!r} in {self.manifest.directory}")
        self.tilt = check_tilt(raw, self.manifest.directory)
        self._outputs = [PROBS]
        if self.scoring == "difficulty_tilted":
            if DIFFICULTY not in self._output_names:
                raise ValueError(f"{self.manifest.model_file} has no {DIFFICULTY!r} output for its scoring")
            standardise = raw.get("strong_logit", {})
            self._logit_mean = float(standardise.get("mean", 0.0))
            self._logit_sd = float(standardise.get("sd", 1.0))
            if not (np.isfinite(self._logit_mean) and np.isfinite(self._logit_sd) and self._logit_sd > 0):
                raise ValueError(f"strong_logit needs a finite mean and sd > 0 in {self.manifest.directory}")
            self._outputs.append(DIFFICULTY)

    def run_rows(self, prompts: Sequence[str], instance: int = 0) -> np.ndarray:
        """One batch: [P(strong), P(tie), P(weak)] per prompt, then the difficulty if tilted."""
        return np.hstack(self.run(prompts, self._outputs, instance))

    def scores_from_rows(self, rows: np.ndarray, strong_model: str = "", weak_model: str = "") -> np.ndarray:
        if self.scoring == "class_probability":
            return rows[:, 0].astype(np.float64)
        z = standardised_margin(rows[:, 0], self._logit_mean, self._logit_sd)
        return tilted(z, rows[:, 3].astype(np.float64), self.tilt)

    def probabilities(self, prompts: Sequence[str]) -> np.ndarray:
        return self.run_chunked(prompts, [PROBS])[0]

    def score(
        self,
        prompts: Sequence[str],
        strong_model: str | None = None,
        weak_model: str | None = None,
    ) -> np.ndarray:
        prompts = list(prompts)
        if not prompts:
            return np.zeros(0, dtype=np.float64)
        return self.scores_from_rows(np.hstack(self.run_chunked(prompts, self._outputs)))
