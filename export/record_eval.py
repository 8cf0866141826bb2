"""Copy `lmroute eval` figures into the shipped manifests (reporting only).

lmroute eval --routers random mf bert mf-fast --benchmark all --output eval_results
python -m export.record_eval --results eval_results/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from export.pipeline import update_manifest
from service.routers import load_manifest

PAPER = {  # RouteLLM (arXiv 2406.18665) figures, from ../shared/data/README.md
    "mf": {"mt-bench": 0.802, "mmlu": 0.524, "gsm8k": 0.565},
    "bert": {"mt-bench": 0.751, "mmlu": 0.502, "gsm8k": 0.531},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.record_eval", description=__doc__)
    p.add_argument("--results", type=Path, default=Path("eval_results/results.json"))
    p.add_argument("--models-dir", type=Path, default=Path("models_onnx"))
    args = p.parse_args(argv)
    results = json.loads(args.results.read_text())["results"]
    for router in sorted({r["router"] for r in results} - {"random"}):
        manifest = load_manifest(args.models_dir / router)
        figures = {}
        for r in results:
            if r["router"] != router:
                continue
            figures[r["benchmark"]] = {
                "apgr": round(r["apgr"], 4),
                "cpt50": round(r["cpt50"], 2),
                "cpt80": round(r["cpt80"], 2),
                "n_prompts": r["n_prompts"],
                "paper_apgr": PAPER.get(router, {}).get(r["benchmark"]),
            }
        figures["artifact_hash"] = manifest.artifact_hash
        figures["procedure"] = "lmroute eval (RouteLLM procedure, ../shared/data/README.md)"
        update_manifest(args.models_dir / router, eval=figures)
        print(f"{router}: {figures}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
