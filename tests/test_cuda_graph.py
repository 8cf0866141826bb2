"""The graph the CUDA provider runs: each static-int8 matmul rewritten as a float MatMul over
the same int8 weights. Checked on the CPU (any machine), and on a GPU where onnxruntime-gpu
finds one."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from service.routers import SessionOptions, load_router
from service.routers.cuda_graph import cuda_model_bytes, needs_rewrite
from tests.conftest import ROOT

onnx = pytest.importorskip("onnx")

PROMPTS = json.loads((ROOT / "tests" / "fixtures" / "reference_prompts.json").read_text(encoding="utf-8"))
CUDA = "CUDAExecutionProvider"
ON_GPU = CUDA in ort.get_available_providers()


def unoptimised_session(model: str | bytes) -> ort.InferenceSession:
    # no graph optimisation, so the CPU runs the rewritten nodes as written
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def scores_with(router, session: ort.InferenceSession, prompts: list[str], batch: int) -> np.ndarray:
    kept = router.sessions[0]
    router.sessions[0] = session
    try:
        strong, weak = router.default_pair
        rows = [router.run_rows(prompts[i : i + batch]) for i in range(0, len(prompts), batch)]
        return router.scores_from_rows(np.concatenate(rows), strong, weak)
    finally:
        router.sessions[0] = kept


@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_rewrite_runs_float_activations_over_the_same_int8_weights(name: str, request) -> None:
    router = request.getfixturevalue(f"{name.replace('-', '_')}_router")
    path = router.manifest.model_file
    original = onnx.load(str(path))
    assert needs_rewrite(original)
    data, count = cuda_model_bytes(path)
    rewritten = onnx.load_from_string(data)
    ops = [n.op_type for n in rewritten.graph.node]
    int8_matmuls = sum(n.op_type in ("QLinearMatMul", "MatMulIntegerToFloat") for n in original.graph.node)
    assert count == int8_matmuls > 0
    assert not {"QLinearMatMul", "MatMulIntegerToFloat", "QuantizeLinear"} & set(ops)  # no activation rounded
    int8_weights = {i.name for i in original.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert int8_weights <= {i.name for i in rewritten.graph.initializer}  # the same weights
    session = unoptimised_session(data)
    float_scores = scores_with(router, session, PROMPTS, batch=len(PROMPTS))
    int8_scores = router.score(PROMPTS)
    # unrounded activations move scores about as much as the CPU's own int8 fusions do
    assert np.abs(float_scores - int8_scores).max() < 0.05
    assert np.abs(float_scores - int8_scores).mean() < 0.015
    # and a prompt's score does not depend on what shares its batch
    np.testing.assert_allclose(scores_with(router, session, PROMPTS, batch=1), float_scores, atol=1e-5)


def test_a_graph_without_static_int8_is_left_alone(tmp_path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert cuda_model_bytes(path) is None


@pytest.mark.skipif(not ON_GPU, reason="needs onnxruntime-gpu and a GPU")
@pytest.mark.parametrize("name", ["mf", "bert", "mf-fast"])
def test_on_cuda_scores_match_the_cpu_and_ignore_batch_neighbours(name: str, request) -> None:
    cpu = request.getfixturevalue(f"{name.replace('-', '_')}_router")
    gpu = load_router(name, session_options=SessionOptions(providers=(CUDA, "CPUExecutionProvider")))
    assert gpu.provider == CUDA
    batched = gpu.score(PROMPTS)
    assert np.abs(batched - cpu.score(PROMPTS)).max() < 0.05
    assert np.abs(batched - cpu.score(PROMPTS)).mean() < 0.015
    one_by_one = np.array([gpu.score([p])[0] for p in PROMPTS])
    np.testing.assert_allclose(one_by_one, batched, atol=1e-3)


def test_without_onnx_the_cuda_path_keeps_the_shipped_graph_and_says_why(mf_router, monkeypatch) -> None:
    import builtins

    from structlog.testing import capture_logs

    from service.routers import session as session_module

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnx":
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    path = mf_router.manifest.model_file
    with capture_logs() as logs:
        assert session_module._cuda_graph(path) == str(path)
    warning = next(e for e in logs if e["event"] == "cuda_graph_not_rewritten")
    assert warning["log_level"] == "warning" and "gpu extra" in warning["reason"]
