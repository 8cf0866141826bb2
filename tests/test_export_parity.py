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
    for router in ("mf", "bert", "mf-fast"):
        model = onnx.load(str(ROOT / "models_onnx" / router / "model.onnx"))
        assert "IsNaN" not in {node.op_type for node in model.graph.node}, router


def test_int8_weight_matmuls_emit_float_and_ffn_outliers_take_the_side_path(exported) -> None:
    onnx = pytest.importorskip("onnx")
    _, tmp = exported
    model = onnx.load(str(tmp / "int8.onnx"))
    ops = [node.op_type for node in model.graph.node]
    # every weight product is int8 x int8 with a float result: none rounds its output to int8,
    # and no int8-stored weight is dequantized for fp32 compute
    assert ops.count("MatMulIntegerToFloat") == 6 * 6  # q, k, v, attention out, FFN up, FFN down
    assert "QLinearMatMul" not in ops
    weights = {init.name for init in model.graph.initializer}
    assert not [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    for router in ("mf", "bert", "mf-fast"):
        manifest = json.loads((ROOT / "models_onnx" / router / "manifest.json").read_text())
        layers = manifest["onnx"]["quantization"]["ffn_down_projections"]["layers"]
        assert layers and all(hi < 12 for _, hi in (layer["input_range"] for layer in layers)), router
        assert any(layer["outlier_channels"] for layer in layers), router  # MiniLM's GELU channel 856


def test_outlier_channels_keep_their_precision(tmp_path) -> None:
    """One input channel 40x larger than the rest: a single int8 input scale would flatten the
    others; the side path keeps the product close to fp32."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from export.onnx_export import _channel_ranges, _split_ffn_down

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 16)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["x0"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["x0", "gain"], ["x"]),
            helper.make_node("MatMul", ["x", "w"], ["y"], name="/layer.0/output/dense/MatMul"),
        ],
        "g",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s", 64]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.full(64, 0.01, np.float32), "gain")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.graph.initializer[1].CopyFrom(
        numpy_helper.from_array(np.where(np.arange(64) == 5, 0.4, 0.01).astype(np.float32), "gain")
    )
    src = tmp_path / "one.onnx"
    onnx.save(model, str(src))

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 100, size=(n, 3, 64)), np.ones((n, 3), np.int64)

    calibration = [batch(8) for _ in range(4)]
    x = batch(16)
    import onnxruntime as ort

    def run(m) -> np.ndarray:
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(["y"], {"input_ids": x[0], "attention_mask": x[1]})[0]

    exact = run(model)
    ranges = _channel_ranges(model, ["x"], calibration)
    split = onnx.load(str(src))
    (layer,) = _split_ffn_down(split, {"/layer.0/output/dense/MatMul"}, ranges)
    assert layer["outlier_channels"] == [5] and layer["input_range"][1] < 1.0
    one_scale = onnx.load(str(src))
    ranges_without = {"x": (np.minimum(ranges["x"][0], 0), np.full(64, ranges["x"][1].max()))}
    (plain,) = _split_ffn_down(one_scale, {"/layer.0/output/dense/MatMul"}, ranges_without)
    assert plain["outlier_channels"] == []
    error_split = np.abs(run(split) - exact).max()
    error_plain = np.abs(run(one_scale) - exact).max()
    assert error_split < 0.02 * np.abs(exact).max() and error_split < error_plain / 5


def test_shipped_tokenizer_sets_truncation_and_padding_explicitly() -> None:
    for name in ("mf", "bert"):
        spec = json.loads(Path(ROOT / "models_onnx" / name / "tokenizer.json").read_text())
        assert spec["truncation"]["max_length"] == 128
        assert spec["padding"]["strategy"] == "BatchLongest"
