"""Eval figures of every MF training seed (mean +- sd), written into the mf manifest.

    python -m export.seed_report --data ../shared/data/eval

MT-Bench has only 72 questions, so one seed's APGR says little; this scores the eval prompts
once with the shipped int8 encoder (its `embedding` output) and applies each seed's trained
head (saved by the pipeline under .cache/export/mf_seeds). It only reports: nothing here
chooses anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from export.mf import MFConfig, MFHead
from export.pipeline import update_manifest
from service.evaluation import apgr, cpt, load_benchmark, resolve_benchmarks, routing_curve
from service.routers import MFRouter
from service.routers.mf import win_rate


def eval_figures(scores: np.ndarray, bench) -> tuple[float, float, float]:
    """(APGR, CPT50, CPT80) of one router's scores on one benchmark."""
    outcomes = (bench.strong_outcome, bench.weak_outcome)
    curve = routing_curve(scores, *outcomes, weights=bench.weights, weak_weights=bench.weak_weights)
    return apgr(curve), cpt(curve, 0.5), cpt(curve, 0.8)


def summarise_seeds(rows: list[tuple[float, float, float]]) -> dict:
    """(APGR, CPT50, CPT80) per seed -> mean, sd and the per-seed APGRs."""
    values = np.array(rows)
    return {
        "seeds": len(rows),
        "apgr_mean": round(float(values[:, 0].mean()), 4),
        "apgr_sd": round(float(values[:, 0].std(ddof=1)), 4) if len(rows) > 1 else 0.0,
        "cpt50_mean": round(float(values[:, 1].mean()), 2),
        "cpt80_mean": round(float(values[:, 2].mean()), 2),
        "apgr_per_seed": [round(float(v), 4) for v in values[:, 0]],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.seed_report", description=__doc__)
    p.add_argument("--data", type=Path, default=Path("../shared/data/eval"))
    p.add_argument("--models-dir", type=Path, default=Path("models_onnx"))
    p.add_argument("--cache", type=Path, default=Path(".cache/export"))
    args = p.parse_args(argv)

    router = MFRouter(args.models_dir / "mf")
    raw = router.manifest.raw
    seeds_dir = args.cache / "mf_seeds"
    config = json.loads((seeds_dir / "config.json").read_text())
    heads = []
    for path in sorted(seeds_dir.glob("head_seed*.pt")):
        head = MFHead(config["n_models"], 384, MFConfig(**config["config"]))
        head.load_state_dict(torch.load(path))
        heads.append((path.stem, head.eval()))
    strong = router.column(router.default_pair[0])
    weak = router.column(router.default_pair[1])
    report: dict = {}
    for name in resolve_benchmarks("all"):
        bench = load_benchmark(name, args.data)
        emb, shipped = router.run_chunked(bench.prompts, ["embedding", "logits"])
        extra = shipped[:, len(router.models) :]  # the difficulty column, shared by every seed
        rows = []
        for _, head in heads:
            with torch.inference_mode():
                logits = np.hstack([head(torch.from_numpy(emb)).numpy(), extra])
            rows.append(eval_figures(win_rate(logits, strong, weak, raw["scoring"], router.tilt), bench))
        report[name] = summarise_seeds(rows)
        r = report[name]
        print(
            f"{name:9s} APGR {r['apgr_mean']:.3f} +- {r['apgr_sd']:.3f} over {len(rows)} seeds; "
            f"CPT50 {r['cpt50_mean']:.1f}% CPT80 {r['cpt80_mean']:.1f}%"
        )
    update_manifest(args.models_dir / "mf", eval_seeds=report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
