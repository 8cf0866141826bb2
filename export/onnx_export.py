"""Export torch graphs to ONNX (legacy exporter, opset 17, dynamic batch and sequence axes)
and quantize them to int8.

Why static, not dynamic, quantization: dynamic int8 picks one activation scale per tensor
from the whole batch, so a prompt's score changes with whatever else shares its batch (we
measured 0.2 logit, 0.02 win rate). A router that batches requests must score each prompt the
same whatever its neighbours. Static (calibrated) scales are fixed, so rows stay independent.
Two groups stay out of static int8 because they cost accuracy (embedding cosine fell to 0.94):
attention's activation-by-activation MatMuls run in fp32, and the FFN down-projections (GELU
outliers in their input) keep fp32 compute with int8-stored weights (weight-only int8).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from export.graph_simplify import simplify_graph

OPSET = 17
INPUTS = ("input_ids", "attention_mask")


def export_onnx(module: torch.nn.Module, path: Path, outputs: dict[str, int]) -> None:
    """Export `module(input_ids, attention_mask)`; `outputs` maps each output name to its rank."""
    module.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    for name, rank in outputs.items():
        dynamic[name] = {0: "batch"} if rank >= 1 else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (ids, mask),
            str(path),
            input_names=list(INPUTS),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


class _Batches(CalibrationDataReader):
    def __init__(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        self._batches = iter(list(batches))

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else dict(zip(INPUTS, batch, strict=False))


def _matmul_groups(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(activation x activation MatMuls, FFN down-projection MatMuls) by node name."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    constants |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    act_act = [n.name for n in matmuls if not any(i in constants for i in n.input)]
    ffn_down = [n.name for n in matmuls if "/output/dense/" in n.name and "attention" not in n.name]
    return act_act, ffn_down


def _weight_only_int8(model: onnx.ModelProto, node_names: set[str]) -> int:
    """Store these MatMuls' fp32 weights as per-output-channel int8 + DequantizeLinear."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    converted = 0
    for node in list(graph.node):
        if node.name not in node_names or node.input[1] not in inits:
            continue
        weight = inits[node.input[1]]
        if weight.data_type != TensorProto.FLOAT:
            continue
        w = numpy_helper.to_array(weight)
        scale = (np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
        base = node.input[1]
        graph.initializer.remove(weight)
        graph.initializer.extend(
            [
                numpy_helper.from_array(q, base + "_int8"),
                numpy_helper.from_array(scale, base + "_scale"),
                numpy_helper.from_array(np.zeros(scale.shape, np.int8), base + "_zero"),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [base + "_int8", base + "_scale", base + "_zero"],
            [base + "_dq"],
            name=base + "_DequantizeLinear",
            axis=1,
        )
        graph.node.insert(list(graph.node).index(node), dq)
        node.input[1] = base + "_dq"
        converted += 1
    return converted


def quantize_int8(src: Path, dst: Path, calibration: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Static per-channel int8 (QOperator), calibrated on `calibration` (ids, mask) batches."""
    act_act, ffn_down = _matmul_groups(onnx.load(str(src)))
    tmp = dst.with_suffix(".static.onnx")
    quantize_static(
        str(src),
        str(tmp),
        _Batches(calibration),
        quant_format=QuantFormat.QOperator,
        per_channel=True,  # per-tensor weights lose measurable accuracy on MiniLM
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_exclude=act_act + ffn_down,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    model = onnx.load(str(tmp))
    converted = _weight_only_int8(model, set(ffn_down))
    simplified = simplify_graph(model)
    onnx.save(model, str(dst))
    tmp.unlink()
    return {
        "method": "static int8 (QOperator, per-channel weights, MinMax-calibrated activations)",
        "fp32_attention_matmuls": len(act_act),
        "weight_only_int8_matmuls": converted,
        "graph_simplified": simplified,
    }


class MFGraph(torch.nn.Module):
    """Encoder + MF head: one run gives the embedding and every known model's logit; with a
    difficulty head (over the embedding and the attention mask), the prompt's standardised
    difficulty is appended as the last column."""

    def __init__(
        self, encoder: torch.nn.Module, head: torch.nn.Module, difficulty: torch.nn.Module | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.difficulty = difficulty

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        emb = self.encoder(input_ids, attention_mask)
        logits = self.head(emb)
        if self.difficulty is not None:
            logits = torch.cat([logits, self.difficulty(emb, attention_mask)], dim=1)
        return emb, logits


class ClassifierGraph(torch.nn.Module):
    """Fine-tuned encoder + 3-class head, softmaxed: [P(strong wins), P(tie), P(weak wins)];
    with a difficulty head, also the prompt's standardised difficulty from the same encoder."""

    def __init__(self, classifier: torch.nn.Module, difficulty: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.classifier = classifier
        self.difficulty = difficulty

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        pooled = self.classifier.pooled(input_ids, attention_mask)
        probs = torch.softmax(self.classifier.head(pooled), dim=-1)
        if self.difficulty is None:
            return probs
        embedding = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
        return probs, self.difficulty(embedding, attention_mask)
