"""Re-quantize shipped artifacts from their cached fp32 graphs with the current int8 recipe.

    python -m export.requantize --routers mf bert mf-fast   # a few minutes on 2 cores

For a change of the quantization recipe alone: nothing is retrained. The fp32 graph must be
the one the shipped artifact was quantized from (`python -m export.pipeline` and
`python -m export.mf_fast` leave it in the cache). Where the manifest records that graph's
sha256 it must match; older manifests do not, so the shipped int8 scores must then agree with
the cached graph's on the train hold-out (Pearson r >= 0.99; another export's graph, e.g. a
smoke run's, lands far below).

Rewritten: model.onnx, the manifest's `onnx.quantization`, its int8 export checks and int8
hold-out AUCs (and mf-fast's agreement with mf), the calibration table and the default
threshold. Kept: everything measured in torch or on fp32 (training, selection, the fp32
parity check). Stale afterwards, and said so at the end: the eval figures (`lmroute eval`,
then `python -m export.record_eval`) and the tests' reference scores
(`python -m export.reference`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from export.data import load_pool, split_prompts
from export.onnx_export import quantize_int8
from export.pipeline import calibrate_and_finish, calibration_batches, regime_pairs_by_prompt, update_manifest
from export.validation import HoldoutValidator, auc
from export.verify import ExportCheckFailed, agreement, check_int8_auc, check_int8_cosine, run_onnx
from service.routers import load_router
from service.routers.manifest import load_manifest, sha256_file

FP32_GRAPHS = {"mf": "mf_fp32.onnx", "bert": "bert_fp32.onnx", "mf-fast": "mf_fast_fp32.onnx"}
SOURCE_AGREEMENT = 0.99


def scores_on(router, model: Path, texts: list[str]) -> np.ndarray:
    """The router's default-pair scores with `model` in place of its shipped graph."""
    kept = router.sessions[0]
    router.sessions[0] = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    try:
        return router.score(texts)
    finally:
        router.sessions[0] = kept


def auc_prompts(name: str, pool, train_idx: np.ndarray, val_idx: np.ndarray) -> np.ndarray:
    """The hold-out prompts the export's AUC check used: the BERT router's are the ones whose
    topic group has regime label pairs (the prompts it is trained for)."""
    if name != "bert":
        return val_idx
    pairs = regime_pairs_by_prompt(pool, train_idx)
    return val_idx[[bool(pairs[i]) for i in val_idx]]


def requantize(name: str, args, pool, train_idx: np.ndarray, val_idx: np.ndarray) -> dict:
    directory = args.output / name
    manifest = load_manifest(directory).raw
    router = load_router(name, artifact_dir=directory)
    fp32 = args.cache / FP32_GRAPHS[name]
    validator = HoldoutValidator(pool, val_idx)
    idx = auc_prompts(name, pool, train_idx, val_idx)
    texts = [pool.texts[i] for i in idx]
    fp32_scores = scores_on(router, fp32, texts)
    shipped_scores = router.score(texts)

    recorded = manifest["onnx"]["quantization"].get("source_fp32_sha256")
    if recorded is not None and recorded != sha256_file(fp32):
        raise ExportCheckFailed(f"{fp32} is not the graph {name} was quantized from (sha256 differs)")
    source_r = float(np.corrcoef(fp32_scores, shipped_scores)[0, 1])
    if recorded is None and source_r < SOURCE_AGREEMENT:
        raise ExportCheckFailed(
            f"{fp32} does not look like the graph {name} was quantized from (hold-out score r "
            f"{source_r:.3f} < {SOURCE_AGREEMENT}); re-run the export that made it"
        )

    tokenizer_file = directory / "tokenizer.json"
    max_tokens = int(manifest["max_tokens"])
    with tempfile.TemporaryDirectory() as tmp:
        new = Path(tmp) / "model.onnx"
        calibration = calibration_batches(
            pool, train_idx, directory, argparse.Namespace(seed=args.seed, max_tokens=max_tokens)
        )
        quant = quantize_int8(fp32, new, calibration)
        kept = "fp32_onnx_vs_torch_max_abs_diff"  # the fp32 graph is unchanged
        report = {k: v for k, v in manifest["export_checks"].items() if k == kept}
        if "embedding" in manifest["onnx"]["outputs"]:
            parity = [pool.texts[i] for i in val_idx[: args.parity_prompts]]
            check_int8_cosine(
                report,
                run_onnx(fp32, tokenizer_file, max_tokens, parity, "embedding"),
                run_onnx(new, tokenizer_file, max_tokens, parity, "embedding"),
            )
        new_scores = scores_on(router, new, texts)
        label = validator.strong[idx] > validator.weak[idx]
        keep = ~np.isnan(validator.strong[idx]) & ~np.isnan(validator.weak[idx])
        aucs = {
            "fp32": auc(fp32_scores[keep], label[keep]),
            "int8": auc(new_scores[keep], label[keep]),
        }
        check_int8_auc(report, aucs)
        shutil.copyfile(new, directory / "model.onnx")

    change = {
        "int8_vs_previous_int8": agreement(new_scores, shipped_scores),
        "previous_model_sha256": manifest["files"]["model.onnx"]["sha256"],
    }
    files = manifest["files"] | {
        "model.onnx": {
            "sha256": sha256_file(directory / "model.onnx"),
            "bytes": (directory / "model.onnx").stat().st_size,
        }
    }
    update_manifest(
        directory,
        artifact_version=time.strftime("%Y%m%d") + "-" + pool.fingerprint()[:8],
        onnx=manifest["onnx"] | {"quantization": quant},
        export_checks=report,
        validation=manifest["validation"] | {"int8_auc": aucs},
        files=files,
    )
    calibrate_and_finish(directory, type(router), pool.texts)
    print(
        f"[{name}] re-quantized: int8 vs fp32 {report.get('int8_vs_fp32_cosine', {}).get('detail', '-')}; "
        f"AUC fp32 {aucs['fp32']:.4f} int8 {aucs['int8']:.4f}; scores vs the previous int8 "
        f"r {change['int8_vs_previous_int8']['score_pearson']:.4f}"
    )
    return change


def refresh_mf_fast_agreement(args, pool, val_idx: np.ndarray) -> None:
    """mf-fast records how closely its int8 scores follow the shipped mf's: measure it again."""
    texts = [pool.texts[i] for i in val_idx]
    mf = load_router("mf", artifact_dir=args.output / "mf")
    fast = load_router("mf-fast", artifact_dir=args.output / "mf-fast")
    raw = fast.manifest.raw
    with_mf = {
        **agreement(fast.score(texts), mf.score(texts)),
        "measured_on": "the train hold-out, both int8 artifacts, default pair",
    }
    teacher = raw["training"]["teacher"] | {"model_sha256": mf.manifest.raw["files"]["model.onnx"]["sha256"]}
    update_manifest(
        args.output / "mf-fast",
        validation=raw["validation"] | {"agreement_with_mf": with_mf},
        training=raw["training"] | {"teacher": teacher},
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m export.requantize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--routers", nargs="+", default=list(FP32_GRAPHS), choices=list(FP32_GRAPHS))
    p.add_argument("--data", type=Path, default=Path("../shared/data/train"))
    p.add_argument("--output", type=Path, default=Path("models_onnx"))
    p.add_argument("--cache", type=Path, default=Path(".cache/export"))
    p.add_argument("--seed", type=int, default=0, help="the pipeline's seed (split, calibration sample)")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--parity-prompts", type=int, default=256)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    pool = load_pool(args.data)
    train_idx, val_idx = split_prompts(pool, args.holdout, args.seed)
    changes = {name: requantize(name, args, pool, train_idx, val_idx) for name in args.routers}
    if "mf-fast" in args.routers or "mf" in args.routers:
        refresh_mf_fast_agreement(args, pool, val_idx)
    print(json.dumps(changes, indent=2))
    print(
        "stale now: the eval figures (lmroute eval, then python -m export.record_eval) and the "
        "reference scores (python -m export.reference)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
