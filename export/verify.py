"""Export checks: ONNX fp32 against torch, int8 against fp32, and int8 routing quality."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.validation import auc
from service.routers.tokenization import BatchTokenizer


class ExportCheckFailed(RuntimeError):
    pass


def run_onnx(
    path: Path, tokenizer_file: Path, max_tokens: int, texts: list[str], output: str, batch: int = 64
) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tok = BatchTokenizer(tokenizer_file, max_tokens)
    order = np.argsort([len(t) for t in texts], kind="stable")
    out: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    for start in range(0, len(texts), batch):
        idx = order[start : start + batch]
        ids, mask = tok([texts[i] for i in idx])
        values = session.run([output], {"input_ids": ids, "attention_mask": mask})[0]
        for i, v in zip(idx, values, strict=False):
            out[i] = v
    return np.stack(out)


def run_torch(
    module: torch.nn.Module,
    tokenizer_file: Path,
    max_tokens: int,
    texts: list[str],
    output_index: int | None = None,
    batch: int = 64,
) -> np.ndarray:
    tok = BatchTokenizer(tokenizer_file, max_tokens)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            ids, mask = tok(texts[start : start + batch])
            value = module(torch.from_numpy(ids), torch.from_numpy(mask))
            if output_index is not None:
                value = value[output_index]
            parts.append(value.numpy())
    return np.concatenate(parts)


def cosine_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean()), float(cos.min())


def check(report: dict, name: str, ok: bool, detail: str) -> None:
    report[name] = {"ok": bool(ok), "detail": detail}
    if not ok:
        raise ExportCheckFailed(f"export check {name} failed: {detail}")


def check_fp32_parity(report: dict, diff: float, n_prompts: int) -> None:
    detail = f"{diff:.2e} <= 1e-4 on {n_prompts} prompts"
    check(report, "fp32_onnx_vs_torch_max_abs_diff", diff <= 1e-4, detail)


def check_int8_cosine(report: dict, fp32_embedding: np.ndarray, int8_embedding: np.ndarray) -> None:
    cmean, cmin = cosine_stats(fp32_embedding, int8_embedding)
    detail = f"mean {cmean:.4f} >= 0.99, min {cmin:.4f} >= 0.97"
    check(report, "int8_vs_fp32_cosine", cmean >= 0.99 and cmin >= 0.97, detail)


def check_int8_auc(report: dict, aucs: dict[str, float]) -> None:
    loss = aucs["fp32"] - aucs["int8"]
    check(report, "int8_auc_loss", loss <= 0.01, f"fp32 {aucs['fp32']:.4f} - int8 {aucs['int8']:.4f} <= 0.01")


def agreement(scores: np.ndarray, reference: np.ndarray) -> dict:
    """How closely one router's scores follow another's (e.g. mf's) on the same prompts."""
    return {
        "score_pearson": float(np.corrcoef(scores, reference)[0, 1]),
        "score_mean_abs_diff": float(np.abs(scores - reference).mean()),
        "same_decision_at_mf_median": float(
            np.mean((scores >= np.median(scores)) == (reference >= np.median(reference)))
        ),
        "n_prompts": len(scores),
    }


def verify_mf_export(
    encoder: torch.nn.Module,
    graph: torch.nn.Module,
    fp32: Path,
    int8: Path,
    tokenizer_file: Path,
    max_tokens: int,
    parity_texts: list[str],
    validator,
    val_idx: np.ndarray,
    val_texts: list[str],
    score: Callable[[np.ndarray], np.ndarray],
) -> tuple[dict, dict[str, float], np.ndarray]:
    """The MF-graph export checks: fp32 ONNX vs torch (embedding and logits), int8 vs fp32
    embedding cosine, and the hold-out AUC of `score(logits)` for fp32 vs int8 (`validator`: a
    HoldoutValidator). Returns the report, the AUCs and the int8 hold-out scores."""
    report: dict = {}
    ref_emb = run_torch(encoder, tokenizer_file, max_tokens, parity_texts)
    ref_logits = run_torch(graph, tokenizer_file, max_tokens, parity_texts, output_index=1)
    onnx_emb = run_onnx(fp32, tokenizer_file, max_tokens, parity_texts, "embedding")
    onnx_logits = run_onnx(fp32, tokenizer_file, max_tokens, parity_texts, "logits")
    diff = float(max(np.abs(ref_emb - onnx_emb).max(), np.abs(ref_logits - onnx_logits).max()))
    check_fp32_parity(report, diff, len(parity_texts))
    check_int8_cosine(report, onnx_emb, run_onnx(int8, tokenizer_file, max_tokens, parity_texts, "embedding"))
    label = validator.strong[val_idx] > validator.weak[val_idx]
    keep = ~np.isnan(validator.strong[val_idx]) & ~np.isnan(validator.weak[val_idx])
    scores = {
        name: score(run_onnx(path, tokenizer_file, max_tokens, val_texts, "logits"))
        for name, path in (("fp32", fp32), ("int8", int8))
    }
    aucs = {name: auc(s[keep], label[keep]) for name, s in scores.items()}
    check_int8_auc(report, aucs)
    return report, aucs, scores["int8"]
