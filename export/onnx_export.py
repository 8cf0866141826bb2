"""Export torch graphs to ONNX (legacy exporter, opset 17, dynamic batch and sequence axes)
and quantize them to int8.

Why static, not dynamic, quantization: dynamic int8 picks one activation scale per tensor
from the whole batch, so a prompt's score changes with whatever else shares its batch (we
measured 0.2 logit, 0.02 win rate). A router that batches requests must score each prompt the
same whatever its neighbours. Static (calibrated) scales are fixed, so rows stay independent.
Every weight MatMul multiplies a statically quantized uint8 input by per-column int8 weights
and emits float (MatMulIntegerToFloat, `_float_outputs`): rounding the output to int8 as well
(QLinearMatMul) only to dequantize it for the next op cost time and accuracy. Two groups need
more care (plain static int8 dropped the embedding cosine to 0.94):
- attention's activation-by-activation MatMuls run in fp32;
- the FFN down-projections (`_split_ffn_down`): MiniLM's GELU outputs have one or two huge
  channels per layer (e.g. 24.7 against 6.2 for the next), so one per-tensor input scale would
  wipe out the rest. Those channels are taken out of the int8 product and added back through
  a small fp32 side MatMul. (They used to keep fp32 compute over int8-stored weights, which
  onnxruntime ran as MatMulNBits: about 30% of the 2-layer model's time.)
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
from service.routers.manifest import sha256_file

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


# An input channel of a down-projection is an outlier when its calibrated |max| exceeds this
# many times the 99th percentile of all its channels' |max| (MiniLM: 0-2 channels a layer).
OUTLIER_FACTOR = 2.0
MAX_OUTLIER_CHANNELS = 16


def _channel_ranges(
    model: onnx.ModelProto, tensors: list[str], calibration: list[tuple[np.ndarray, np.ndarray]]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (min, max) of these activations of `model` (left as it is) over the real
    (unpadded) calibration tokens."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    low: dict[str, np.ndarray] = {}
    high: dict[str, np.ndarray] = {}
    for ids, mask in calibration:
        feeds = {"input_ids": ids, "attention_mask": mask}
        for name, value in zip(tensors, session.run(tensors, feeds), strict=True):
            real = value[mask.astype(bool)]  # [tokens, channels]
            low[name] = np.minimum(low.get(name, np.inf), real.min(0))
            high[name] = np.maximum(high.get(name, -np.inf), real.max(0))
    return {name: (low[name], high[name]) for name in tensors}


def _float_outputs(model: onnx.ModelProto) -> int:
    """Replace each QLinearMatMul whose int8 output is only dequantized by a MatMulIntegerToFloat
    on the same quantized input, weights and scales: the float result without the rounding.
    A bias Add that alone reads the result moves into the op (its optional bias input)."""
    graph = model.graph
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    vectors = {i.name for i in graph.initializer if len(i.dims) == 1}
    replaced = 0
    for node in list(graph.node):
        users = readers.get(node.output[0], []) if node.op_type == "QLinearMatMul" else []
        if len(users) != 1 or users[0].op_type != "DequantizeLinear":
            continue
        a, a_scale, a_zero, b, b_scale, b_zero, _, _ = node.input
        inputs, output, dropped = [a, b, a_scale, b_scale, a_zero, b_zero], users[0].output[0], [users[0]]
        adds = readers.get(output, [])
        if len(adds) == 1 and adds[0].op_type == "Add":
            bias = [name for name in adds[0].input if name != output]
            if len(bias) == 1 and bias[0] in vectors:
                inputs, output, dropped = inputs + bias, adds[0].output[0], dropped + adds
        fused = helper.make_node(
            "MatMulIntegerToFloat", inputs, [output], name=node.name + "_float", domain="com.microsoft"
        )
        graph.node.insert(list(graph.node).index(node), fused)
        for gone in [node, *dropped]:
            graph.node.remove(gone)
        replaced += 1
    read = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in read]:  # the dropped output scales
        graph.initializer.remove(init)
    _use_microsoft_domain(model)
    return replaced


def _use_microsoft_domain(model: onnx.ModelProto) -> None:
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _split_ffn_down(
    model: onnx.ModelProto, node_names: set[str], ranges: dict[str, tuple[np.ndarray, np.ndarray]]
) -> list[dict]:
    """Rewrite each named MatMul (float input x float [K, N] weight) in place as
        QuantizeLinear(x) -> MatMulIntegerToFloat(int8 weight, outlier rows zeroed)
        + MatMul(Gather(x, outlier channels), their fp32 weight rows)
    with the input's static uint8 scale spanning only the non-outlier channels (an outlier's
    clipped value meets a zero weight row, its exact product comes from the side MatMul)."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done = []
    for node in list(graph.node):
        if node.name not in node_names or node.input[1] not in inits:
            continue
        x, weight_name = node.input
        w = numpy_helper.to_array(inits[weight_name]).astype(np.float32)
        low, high = ranges[x]
        reach = np.maximum(np.abs(low), np.abs(high))
        outliers = np.where(reach > OUTLIER_FACTOR * np.percentile(reach, 99))[0]
        outliers = outliers[np.argsort(-reach[outliers])][:MAX_OUTLIER_CHANNELS]
        outliers.sort()
        inliers = np.ones(len(reach), bool)
        inliers[outliers] = False
        lo, hi = min(0.0, float(low[inliers].min())), max(0.0, float(high[inliers].max()))
        a_scale = np.float32(max(hi - lo, 1e-8) / 255.0)
        a_zero = np.uint8(np.clip(np.round(-lo / a_scale), 0, 255))
        main = w.copy()
        main[outliers] = 0.0
        b_scale = (np.maximum(np.abs(main).max(axis=0), 1e-12) / 127.0).astype(np.float32)
        b = np.clip(np.round(main / b_scale), -127, 127).astype(np.int8)
        base = weight_name
        graph.initializer.remove(inits[weight_name])
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(a_scale), base + "_a_scale"),
                numpy_helper.from_array(np.array(a_zero), base + "_a_zero"),
                numpy_helper.from_array(b, base + "_int8"),
                numpy_helper.from_array(b_scale, base + "_scale"),
            ]
        )
        main_out = node.output[0] if len(outliers) == 0 else base + "_main"
        new = [
            helper.make_node(
                "QuantizeLinear",
                [x, base + "_a_scale", base + "_a_zero"],
                [base + "_xq"],
                name=base + "_quantize",
            ),
            helper.make_node(
                "MatMulIntegerToFloat",
                [base + "_xq", base + "_int8", base + "_a_scale", base + "_scale", base + "_a_zero"],
                [main_out],
                name=base + "_int8_matmul",
                domain="com.microsoft",
            ),
        ]
        if len(outliers):
            graph.initializer.extend(
                [
                    numpy_helper.from_array(outliers.astype(np.int64), base + "_outlier_channels"),
                    numpy_helper.from_array(w[outliers], base + "_outlier_rows"),
                ]
            )
            new += [
                helper.make_node(
                    "Gather", [x, base + "_outlier_channels"], [base + "_xo"], name=base + "_gather", axis=-1
                ),
                helper.make_node(
                    "MatMul", [base + "_xo", base + "_outlier_rows"], [base + "_side"], name=base + "_side"
                ),
                helper.make_node("Add", [main_out, base + "_side"], [node.output[0]], name=base + "_sum"),
            ]
        position = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, item in enumerate(new):
            graph.node.insert(position + offset, item)
        done.append({"node": node.name, "outlier_channels": outliers.tolist(), "input_range": [lo, hi]})
    _use_microsoft_domain(model)
    return done


def quantize_int8(src: Path, dst: Path, calibration: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Static per-channel int8 (QOperator), calibrated on `calibration` (ids, mask) batches."""
    calibration = list(calibration)
    fp32 = onnx.load(str(src))
    act_act, ffn_down = _matmul_groups(fp32)
    down_inputs = [n.input[0] for n in fp32.graph.node if n.name in set(ffn_down)]
    ranges = _channel_ranges(fp32, down_inputs, calibration)
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
    simplified = simplify_graph(model)  # before the rewrite: shape inference has no MatMulIntegerToFloat
    float_out = _float_outputs(model)
    split = _split_ffn_down(model, set(ffn_down), ranges)
    onnx.save(model, str(dst))
    tmp.unlink()
    return {
        "method": "static int8 (per-channel weights, MinMax-calibrated activations), float outputs "
        "(MatMulIntegerToFloat)",
        "int8_matmuls": float_out,
        "fp32_attention_matmuls": len(act_act),
        "ffn_down_projections": {
            "method": "the same, with outlier input channels (calibrated |max| > "
            f"{OUTLIER_FACTOR} x the 99th percentile of the layer's channels) taken out of the "
            "int8 product and added back by an fp32 side MatMul",
            "layers": split,
        },
        "graph_simplified": simplified,
        "source_fp32_sha256": sha256_file(src),
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
