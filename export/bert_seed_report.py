"""Eval figures of BERT training seeds (mean +- sd), written into the bert manifest.

    python -m export.bert_seed_report --data ../shared/data/eval [--seeds 1 2 3 4]

MT-Bench has only 72 questions, so one seed's APGR says little. This fine-tunes the BERT
router again with other training seeds (same split, labels, epochs and tilt as the shipped
one; the epoch is chosen on the regime hold-out as in the pipeline), fits each seed's own
difficulty ridge and standardisation on train/, and scores the eval prompts in torch (fp32;
the export checks show int8 within 0.001 AUC). The shipped artifact (seed 0, int8) is scored
through the runtime. It only reports: nothing here chooses anything. About 14 min per seed
on 2 cores.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from export.bert import BertConfig, probs_and_embeddings, regime_labels, train_bert
from export.data import load_pool, split_prompts
from export.difficulty import predict_difficulty, token_counts
from export.encoder import load_encoder, load_tokenizer, locate_encoder
from export.pipeline import bert_score_parts, regime_pairs_by_prompt, update_manifest
from export.seed_report import eval_figures, summarise_seeds
from export.validation import RegimeValidator
from service.evaluation import load_benchmark, resolve_benchmarks
from service.routers import BertRouter
from service.routers.tilt import standardised_margin, tilted


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.bert_seed_report", description=__doc__)
    p.add_argument("--data", type=Path, default=Path("../shared/data/eval"))
    p.add_argument("--train", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--models-dir", type=Path, default=Path("models_onnx"))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="extra training seeds")
    p.add_argument("--holdout", type=float, default=0.2, help="as the pipeline's --holdout")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    shipped = BertRouter(args.models_dir / "bert")
    raw = shipped.manifest.raw
    cfg = BertConfig(**raw["training"]["config"])
    tilt = float(raw["difficulty_tilt"])
    pool = load_pool(args.train)
    train_idx, val_idx = split_prompts(pool, args.holdout, raw["training"]["split_seed"])
    if len(val_idx) != raw["training"]["holdout_prompts"]:
        raise SystemExit("the split differs from the shipped artifact's: pass the pipeline's --holdout")
    enc_folder = locate_encoder(None)
    tokenizer = load_tokenizer(enc_folder, raw["max_tokens"])
    n_tokens = token_counts(tokenizer, pool.texts)
    labels, has_pair = regime_labels(pool.outcome, pool.observed, regime_pairs_by_prompt(pool, train_idx))
    regime = RegimeValidator(pool, train_idx, val_idx)
    benches = {name: load_benchmark(name, args.data) for name in resolve_benchmarks("all")}
    rows: dict[str, list[tuple[float, float, float]]] = {
        name: [eval_figures(shipped.score(b.prompts), b)] for name, b in benches.items()
    }
    full = np.full(len(pool.texts), np.nan)

    def val_metric(probs: np.ndarray) -> float:
        full[val_idx] = probs[:, 0]
        return regime(lambda i, a, b: full[i])["regime_apgr_mean"]

    for seed in args.seeds:
        print(f"[bert seed {seed}] fine-tuning", flush=True)
        model, _ = train_bert(
            load_encoder(enc_folder),
            tokenizer,
            pool.texts,
            labels,
            np.array(pool.sources),
            train_idx[has_pair[train_idx]],
            val_idx,
            BertConfig(**{**cfg.to_dict(), "seed": seed}),
            val_metric,
        )
        _, _, difficulty, standardise = bert_score_parts(model, tokenizer, pool, n_tokens, train_idx)
        for name, bench in benches.items():
            probs, tuned = probs_and_embeddings(model, tokenizer, list(bench.prompts))
            z = standardised_margin(probs[:, 0], standardise["mean"], standardise["sd"])
            d = predict_difficulty(difficulty, tuned, token_counts(tokenizer, bench.prompts))
            rows[name].append(eval_figures(tilted(z, d, tilt), bench))
            print(f"  {name}: APGR {rows[name][-1][0]:.4f}", flush=True)

    report: dict = {}
    for name, values in rows.items():
        report[name] = {**summarise_seeds(values), "seeds_used": [cfg.seed, *args.seeds]}
        r = report[name]
        print(f"{name:9s} APGR {r['apgr_mean']:.3f} +- {r['apgr_sd']:.3f} over {r['seeds']} seeds")
    update_manifest(args.models_dir / "bert", eval_seeds=report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
