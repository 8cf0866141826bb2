"""Export parity: the ONNX export matches torch, and int8 stays close to fp32.

Runs where the train extra (torch, transformers, the bundled encoder) is installed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from export.encoder import load_encoder, load_tokenizer, locate_encoder  # noqa: E402
from export.graph_simplify import simplify_graph  # noqa: E402
from export.onnx_export import export_onnx, quantize_int8  # noqa: E402
from export.verify import cosine_stats, run_onnx, run_torch  # noqa: E402
from service.routers.tokenization import BatchTokenizer  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

PROMPTS = json.loads((ROOT / "tests/fixtures/reference_prompts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple:
    try:
        folder = locate_encoder()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    torch.set_num_threads(2)
    encoder = load_encoder(folder)
    tmp = tmp_path_factory.mktemp("export")
    load_tokenizer(folder, 128).save(str(tmp / "tokenizer.json"))
    export_onnx(encoder, tmp / "fp32.onnx", {"embedding": 2})
    tok = BatchTokenizer(tmp / "tokenizer.json", 128)
    calibration = [tok(PROMPTS[i : i + 5]) for i in range(0, len(PROMPTS), 5)]
    quantize_int8(tmp / "fp32.onnx", tmp / "int8.onnx", calibration)
    return encoder, tmp


def test_fp32_onnx_matches_torch(exported) -> None:
    encoder, tmp = exported
    ref = run_torch(encoder, tmp / "tokenizer.json", 128, PROMPTS, batch=7)
    got = run_onnx(tmp / "fp32.onnx", tmp / "tokenizer.json", 128, PROMPTS, "embedding", batch=7)
    assert np.abs(ref - got).max() <= 1e-4


def test_int8_is_close_to_fp32_and_batch_invariant(exported) -> None:
    _, tmp = exported
    fp32 = run_onnx(tmp / "fp32.onnx", tmp / "tokenizer.json", 128, PROMPTS, "embedding")
    int8 = run_onnx(tmp / "int8.onnx", tmp / "tokenizer.json", 128, PROMPTS, "embedding")
    mean, low = cosine_stats(fp32, int8)
    assert mean >= 0.99 and low >= 0.97
    single = run_onnx(tmp / "int8.onnx", tmp / "tokenizer.json", 128, PROMPTS, "embedding", batch=1)
    assert np.abs(single - int8).max() <= 1e-5
    assert (tmp / "int8.onnx").stat().st_size < 0.4 * (tmp / "fp32.onnx").stat().st_size


def test_graph_simplification_changes_no_output_bit(exported) -> None:
    _, tmp = exported
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(tmp / "fp32.onnx"))
    report = simplify_graph(model)
    onnx.save(model, str(tmp / "fp32_simplified.onnx"))
    kinds = {node.op_type for node in model.graph.node}
    assert report["static_reshapes"] > 0 and report["softmax_nan_guards_removed"] > 0
    assert report["nodes_after"] < report["nodes_before"] and "IsNaN" not in kinds
    for batch in (1, 7):  # batches of 7 pad the short prompts, so masked keys are exercised
        before = run_onnx(tmp / "fp32.onnx", tmp / "tokenizer.json", 128, PROMPTS, "embedding", batch=batch)
        after = run_onnx(
            tmp / "fp32_simplified.onnx", tmp / "tokenizer.json", 128, PROMPTS, "embedding", batch=batch
        )
        assert np.array_equal(before, after)


def test_shipped_artifacts_are_simplified() -> None:
    onnx = pytest.importorskip("onnx")
    for router in ("mf", "bert"):
        model = onnx.load(str(ROOT / "models_onnx" / router / "model.onnx"))
        assert "IsNaN" not in {node.op_type for node in model.graph.node}, router


def test_shipped_tokenizer_sets_truncation_and_padding_explicitly() -> None:
    for name in ("mf", "bert"):
        spec = json.loads(Path(ROOT / "models_onnx" / name / "tokenizer.json").read_text())
        assert spec["truncation"]["max_length"] == 128
        assert spec["padding"]["strategy"] == "BatchLongest"
