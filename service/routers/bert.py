"""The BERT-style classifier router: P(strong wins), P(tie), P(weak wins) per prompt."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.routers.onnx_router import OnnxRouter

PROBS = "probs"


class BertRouter(OnnxRouter):
    """Score = P(strong wins), so ties go to the cheap model (as in RouteLLM).

    The classifier was trained for a tier of strong models against a tier of weak ones, so it
    accepts any (strong, weak) names: they do not change the score.
    """

    kind = "bert"

    def probabilities(self, prompts: Sequence[str]) -> np.ndarray:
        return self.run_chunked(prompts, [PROBS])[0]

    def score(
        self,
        prompts: Sequence[str],
        strong_model: str | None = None,
        weak_model: str | None = None,
    ) -> np.ndarray:
        return self.probabilities(prompts)[:, 0].astype(np.float64)
