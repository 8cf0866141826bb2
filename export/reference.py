"""Write tests/fixtures/reference_scores.json: the shipped routers' scores on 20 fixed prompts.

    python -m export.reference

The test suite compares the ONNX outputs against it, so an artifact or runtime change that
moves scores is caught. Re-run this only when a new artifact is shipped on purpose.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from service.routers import load_router

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def write_reference(models_dir: Path, fixtures: Path = FIXTURES) -> Path:
    prompts = json.loads((fixtures / "reference_prompts.json").read_text(encoding="utf-8"))
    out: dict = {}
    for name in ("mf", "bert", "mf-fast"):
        if not (models_dir / name).is_dir():
            continue
        router = load_router(name, models_dir / name)
        out[name] = {
            "artifact_hash": router.artifact_hash,
            "pair": list(router.default_pair),
            "scores": [round(float(s), 7) for s in router.score(prompts)],
        }
    path = fixtures / "reference_scores.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.reference", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("models_onnx"))
    args = parser.parse_args(argv)
    print(f"wrote {write_reference(args.models_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
