"""`mf-fast`: the mf router with a 2-layer MiniLM distilled from the full encoder.

    python -m export.mf_fast --data ../shared/data/train --output models_onnx   # ~25 min on 2 cores

Run after `python -m export.pipeline` (it reads that run's cache: the embeddings, the shipped
MF head, the fp32 graph). The student keeps the teacher's MF head and difficulty regression
unchanged and learns to reproduce their inputs (`export/student.py`), so every known model
pair, the stand-in, the tilt and the scoring rule carry over from `models_onnx/mf`. The epoch
kept is the one whose hold-out scores agree best with the full mf router's (Pearson r over the
train hold-out, default pair). Nothing under eval/ is read.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from export.data import load_pool, split_prompts
from export.difficulty import fit_difficulty, predict_difficulty, token_counts
from export.embed import cached_embeddings, embed_texts
from export.encoder import ENCODER_NAME, license_note, load_encoder, load_tokenizer, locate_encoder
from export.mf import MFConfig, MFHead, predict_logits
from export.onnx_export import MFGraph, export_onnx, quantize_int8
from export.pipeline import calibrate_and_finish, calibration_batches, save_tokenizer, write_manifest
from export.student import HIDDEN, StudentConfig, distill, embed_ids, keep_layers, readout_matrix, token_crops
from export.tiers import DEFAULT_WEAK
from export.validation import HoldoutValidator, RegimeValidator
from export.verify import ExportCheckFailed, agreement, run_onnx, run_torch, verify_mf_export
from service.routers import MFRouter
from service.routers.manifest import load_manifest, sha256_file
from service.routers.mf import win_rate

NAME = "mf-fast"
# copied from the teacher's manifest: the same head means the same models, pair and scoring
TEACHER_FIELDS = ("models", "stand_ins", "scoring", "difficulty_tilt", "variant", "aliases", "default_pair")


def linear_maps(head: MFHead, difficulty) -> tuple[torch.Tensor, torch.Tensor]:
    """The MF head and the difficulty regression are linear in the embedding: their matrices."""
    with torch.no_grad():
        eye, zero = torch.eye(HIDDEN), torch.zeros(1, HIDDEN)
        logit_map = (head(eye) - head(zero)).T  # [n_models, hidden]
        difficulty_map = difficulty.linear.weight[0, :HIDDEN].clone()
    return logit_map, difficulty_map


def teacher_parts(args, pool, emb, n_tokens, train_idx):
    """The shipped mf router's head and difficulty regression, rebuilt from the pipeline cache
    (main() then checks them against the cached fp32 graph)."""
    seeds_dir = args.cache / "mf_seeds"
    config = json.loads((seeds_dir / "config.json").read_text())
    head = MFHead(config["n_models"], HIDDEN, MFConfig(**config["config"]))
    head.load_state_dict(torch.load(seeds_dir / f"head_seed{args.seed}.pt"))
    head.eval()
    difficulty = fit_difficulty(emb, n_tokens, pool.outcome, pool.observed, train_idx)
    return head, difficulty


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m export.mf_fast",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--output", type=Path, default=Path("models_onnx"))
    p.add_argument("--teacher", type=Path, default=None, help="the mf artifact (default: OUTPUT/mf)")
    p.add_argument("--cache", type=Path, default=Path(".cache/export"))
    p.add_argument("--encoder-dir", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0, help="the pipeline's seed (split, shipped MF head)")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--layers", type=int, nargs="+", default=list(StudentConfig.layers))
    p.add_argument("--epochs", type=int, default=StudentConfig.epochs)
    p.add_argument("--crops", type=int, default=StudentConfig.crops_per_prompt)
    p.add_argument("--parity-prompts", type=int, default=256)
    p.add_argument("--max-train-prompts", type=int, default=None, help="distil on fewer prompts (smoke runs)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()
    teacher_dir = args.teacher or args.output / "mf"
    teacher_manifest = load_manifest(teacher_dir).raw
    max_tokens = int(teacher_manifest["max_tokens"])
    cfg = StudentConfig(
        layers=tuple(args.layers), epochs=args.epochs, crops_per_prompt=args.crops, seed=args.seed
    )

    pool = load_pool(args.data)
    train_idx, val_idx = split_prompts(pool, args.holdout, args.seed)
    enc_folder = locate_encoder(args.encoder_dir)
    teacher = load_encoder(enc_folder)
    tokenizer = load_tokenizer(enc_folder, max_tokens)
    emb = cached_embeddings(
        args.cache,
        [ENCODER_NAME, str(max_tokens)],
        pool.texts,
        lambda: embed_texts(teacher, tokenizer, pool.texts),
    )
    n_tokens = token_counts(tokenizer, pool.texts)
    head, difficulty = teacher_parts(args, pool, emb, n_tokens, train_idx)
    teacher_graph = MFGraph(teacher, head, difficulty).eval()
    tok_file = teacher_dir / "tokenizer.json"
    parity = [pool.texts[i] for i in val_idx[:64]]
    fp32_teacher = args.cache / "mf_fp32.onnx"
    drift = float(
        np.abs(
            run_torch(teacher_graph, tok_file, max_tokens, parity, output_index=1)
            - run_onnx(fp32_teacher, tok_file, max_tokens, parity, "logits")
        ).max()
    )
    if drift > 1e-4:
        raise ExportCheckFailed(
            f"the cached MF head does not reproduce {fp32_teacher} (max |diff| {drift:.2e}): "
            "re-run python -m export.pipeline first"
        )

    tilt = float(teacher_manifest["difficulty_tilt"])
    scoring = teacher_manifest["scoring"]
    stand_in = teacher_manifest["stand_ins"].get(
        teacher_manifest["default_pair"]["strong"], teacher_manifest["default_pair"]["strong"]
    )
    strong, weak = pool.model_index(stand_in), pool.model_index(DEFAULT_WEAK)
    logit_map, difficulty_map = linear_maps(head, difficulty)
    readout = readout_matrix(logit_map, difficulty_map, (strong, weak), tilt, emb[train_idx], cfg.pair_weight)

    def router_logits(e: np.ndarray) -> np.ndarray:
        return np.hstack([predict_logits(head, e), predict_difficulty(difficulty, e, n_tokens)[:, None]])

    teacher_logits = router_logits(emb)
    teacher_scores = win_rate(teacher_logits[val_idx], strong, weak, scoring, tilt)
    regime = RegimeValidator(pool, train_idx, val_idx)
    regime_teacher = regime(lambda i, a, b: win_rate(teacher_logits[i], a, b, scoring, tilt))[
        "regime_apgr_mean"
    ]
    val_ids = [e.ids for e in tokenizer.encode_batch([pool.texts[i] for i in val_idx])]

    def evaluate(student) -> dict:
        e = emb.copy()
        e[val_idx] = embed_ids(student, val_ids, desc="hold-out")
        logits = router_logits(e)
        scores = win_rate(logits[val_idx], strong, weak, scoring, tilt)
        r = float(np.corrcoef(scores, teacher_scores)[0, 1])
        return {
            "score": r,
            "score_pearson_vs_mf": r,
            "score_mean_abs_diff_vs_mf": float(np.abs(scores - teacher_scores).mean()),
            "embedding_cosine_mean": float((e[val_idx] * emb[val_idx]).sum(1).mean()),
            "regime_apgr_mean": regime(lambda i, a, b: win_rate(logits[i], a, b, scoring, tilt))[
                "regime_apgr_mean"
            ],
        }

    print(
        f"[{NAME}] teacher (mf) hold-out regime APGR {regime_teacher:.4f}; "
        f"distilling layers {list(cfg.layers)}"
    )
    distil_idx = train_idx[: args.max_train_prompts]
    train_ids = [e.ids for e in tokenizer.encode_batch([pool.texts[i] for i in distil_idx])]
    long_ids = [
        e.ids for e in load_tokenizer(enc_folder, 512).encode_batch([pool.texts[i] for i in distil_idx])
    ]
    crops = token_crops(long_ids, cfg.crops_per_prompt, max_tokens, cfg.min_crop_tokens, cfg.seed)
    crop_emb = cached_embeddings(
        args.cache,
        ["crops", ENCODER_NAME, str(max_tokens)],
        [" ".join(map(str, c)) for c in crops],
        lambda: embed_ids(teacher, crops, desc="teacher on crops"),
    )
    student = keep_layers(load_encoder(enc_folder), cfg.layers)
    student, history = distill(
        student, train_ids + crops, np.vstack([emb[distil_idx], crop_emb]), readout, cfg, evaluate
    )
    chosen = max(history, key=lambda h: h["score"])
    print(f"[{NAME}] kept epoch {chosen['epoch']} (score r vs mf {chosen['score']:.4f})")

    out = args.output / NAME
    out.mkdir(parents=True, exist_ok=True)
    graph = MFGraph(student, head, difficulty).eval()
    fp32 = args.cache / "mf_fast_fp32.onnx"
    export_onnx(graph, fp32, {"embedding": 2, "logits": 2})
    save_tokenizer(enc_folder, max_tokens, out / "tokenizer.json")
    quant = quantize_int8(
        fp32,
        out / "model.onnx",
        calibration_batches(pool, train_idx, out, argparse.Namespace(seed=args.seed, max_tokens=max_tokens)),
    )

    val_texts = [pool.texts[i] for i in val_idx]
    report, aucs, int8_scores = verify_mf_export(
        student,
        graph,
        fp32,
        out / "model.onnx",
        tok_file,
        max_tokens,
        [pool.texts[i] for i in val_idx[: args.parity_prompts]],
        HoldoutValidator(pool, val_idx),
        val_idx,
        val_texts,
        lambda logits: win_rate(logits, strong, weak, scoring, tilt),
    )
    shipped_mf = win_rate(
        run_onnx(teacher_dir / "model.onnx", tok_file, max_tokens, val_texts, "logits"),
        strong,
        weak,
        scoring,
        tilt,
    )
    with_mf = {
        **agreement(int8_scores, shipped_mf),
        "measured_on": "the train hold-out, both int8 artifacts, default pair",
    }
    print(
        f"[{NAME}] int8 vs shipped mf on the hold-out: " + ", ".join(f"{k} {v}" for k, v in with_mf.items())
    )

    fields = {
        "kind": MFRouter.kind,
        "name": NAME,
        "artifact_version": time.strftime("%Y%m%d") + "-" + pool.fingerprint()[:8],
        "onnx": {
            "model": "model.onnx",
            "inputs": ["input_ids", "attention_mask"],
            "outputs": ["embedding", "logits"],
            "logit_columns": "one per model in `models` order, then the prompt's standardised difficulty",
            "quantization": quant,
        },
        "tokenizer": "tokenizer.json",
        "max_tokens": max_tokens,
        "calibration": {},
        **{k: teacher_manifest[k] for k in TEACHER_FIELDS},
        "validation": {
            "teacher_regime_apgr_mean": regime_teacher,
            "epochs": history,
            "kept_epoch": chosen["epoch"],
            "selection": "the epoch whose hold-out scores (default pair) correlate best with the full mf "
            "router's; eval/ is never read",
            "agreement_with_mf": with_mf,
            "int8_auc": aucs,
        },
        "training": {
            "teacher": {
                "artifact": "mf",
                "artifact_version": teacher_manifest["artifact_version"],
                "model_sha256": sha256_file(teacher_dir / "model.onnx"),
            },
            "student": {**cfg.to_dict(), "encoder": ENCODER_NAME, "hidden_layers": len(cfg.layers)},
            "distillation_text": f"{len(distil_idx)} train-split prompts and {len(crops)} random token "
            "crops of them, labelled by the teacher encoder (no preference labels needed)",
            "heads": "the mf artifact's MF head and difficulty regression, unchanged",
            **pool.summary(),
        },
        "export_checks": report,
        "license": license_note(enc_folder),
        "file_names": ["model.onnx", "tokenizer.json"],
    }
    write_manifest(out, fields)
    calibrate_and_finish(out, MFRouter, pool.texts)
    print(f"done in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
