"""A RouteLLM-style router server, for side-by-side benchmarks only: FastAPI/uvicorn,
transformers and torch, one forward pass per request (how RouteLLM serves its BERT router).

    python -m benchmarks.routellm_style_server --weights .cache/export/bert_hf --port 8080

It serves the same BERT-router weights as models_onnx/bert, saved in Hugging Face format by
`python -m export.pipeline` (under .cache/export/bert_hf). POST /route {"prompt", "threshold"}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from tokenizers import Tokenizer
from transformers import BertModel

from export.difficulty import DifficultyHead
from service.routers.tilt import standardised_margin, tilted


class RouteBody(BaseModel):
    prompt: str
    threshold: float = 0.5


def build_app(weights: Path) -> FastAPI:
    meta = json.loads((weights / "lmroute_head.json").read_text())
    bert = BertModel.from_pretrained(str(weights), add_pooling_layer=False).eval()
    head = torch.nn.Linear(bert.config.hidden_size, len(meta["classes"]))
    head.load_state_dict(torch.load(weights / "head.pt"))
    head.eval()
    tokenizer = Tokenizer.from_file(str(weights / "tokenizer.json"))
    is_tilted = meta.get("scoring") == "difficulty_tilted"
    if is_tilted:  # the same score as the ONNX router: its class margin tilted by difficulty
        difficulty = DifficultyHead(bert.config.hidden_size)
        difficulty.load_state_dict(torch.load(weights / "difficulty.pt"))
        difficulty.eval()
        tilt, logit_mean, logit_sd = (
            meta["difficulty_tilt"],
            meta["strong_logit"]["mean"],
            meta["strong_logit"]["sd"],
        )
    app = FastAPI()

    @app.post("/route")
    def route(body: RouteBody) -> dict:
        # one forward pass per request, as RouteLLM's BERT router does
        enc = tokenizer.encode(body.prompt)
        ids = torch.tensor([enc.ids])
        mask = torch.tensor([enc.attention_mask])
        with torch.inference_mode():
            hidden = bert(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            probs = torch.softmax(head(pooled), -1)[0]
            score = float(probs[0])
            if is_tilted:
                d = float(difficulty(torch.nn.functional.normalize(pooled, dim=-1), mask)[0, 0])
                z = standardised_margin(np.array([score]), logit_mean, logit_sd)
                score = float(tilted(z, np.array([d]), tilt)[0])
        return {"strong_win_rate": score, "strong": score >= body.threshold}

    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.routellm_style_server", description=__doc__)
    p.add_argument("--weights", type=Path, default=Path(".cache/export/bert_hf"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args(argv)
    uvicorn.run(build_app(args.weights), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
