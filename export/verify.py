"""Export checks: ONNX fp32 against torch, int8 against fp32, and int8 routing quality."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

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


def check_int8_auc(report: dict, aucs: dict[str, float]) -> None:
    loss = aucs["fp32"] - aucs["int8"]
    check(report, "int8_auc_loss", loss <= 0.01, f"fp32 {aucs['fp32']:.4f} - int8 {aucs['int8']:.4f} <= 0.01")
