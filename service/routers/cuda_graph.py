"""The graph the CUDA provider runs, derived from a shipped static-int8 artifact.

onnxruntime's CUDA provider has no kernel for QLinearMatMul or MatMulIntegerToFloat, the cores
of our static int8 graphs: left as they are, those nodes run on the CPU with host/device copies
around every layer. This rewrites each QuantizeLinear -> QLinearMatMul -> DequantizeLinear
chain, and each QuantizeLinear -> MatMulIntegerToFloat (the FFN down-projections), as a float
MatMul over the same int8 weights, dequantized in the graph (weight-only int8), which the CUDA
provider runs on the device.

Why not keep the activations in int8 (DequantizeLinear -> MatMul -> QuantizeLinear)? That was
measured first: the GPU's float sums differ from exact int32 ones in the last bits, a few
activations then round to the next int8 step, and a prompt's score moved by up to 0.02 with
the shape of its batch. A router that batches must score a prompt the same whatever its
neighbours. Float activations keep that (the batch shape moves float rounding only), at the
price of differing from the CPU's int8 scores by about as much as the CPU's own graph
optimisations do (tests/test_cuda_graph.py bounds both).

Needs the `onnx` package (in the `gpu` extra); without it the caller keeps the original graph.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

INT8_MATMULS = ("QLinearMatMul", "MatMulIntegerToFloat")


def needs_rewrite(model) -> bool:
    return any(node.op_type in INT8_MATMULS for node in model.graph.node)


def rewrite_int8_matmuls(model) -> int:
    """Rewrite every QLinearMatMul and MatMulIntegerToFloat of `model` (an onnx.ModelProto) in
    place as a float MatMul with a dequantized weight; returns how many. Quantize/dequantize
    nodes left without a consumer are removed."""
    from onnx import helper

    graph = model.graph
    original = list(graph.node)  # positions, not protobuf wrappers, identify nodes below
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    producer = {out: node for node in original for out in node.output}
    consumers: dict[str, list[int]] = defaultdict(list)
    for position, node in enumerate(original):
        for name in node.input:
            consumers[name].append(position)

    def float_input(value: str, scale: str, zero: str, base: str, out: list) -> str:
        source = producer.get(value)
        if source is not None and source.op_type == "QuantizeLinear":
            return source.input[0]  # the float activation before it was rounded to int8
        attrs = {}
        # per-channel weights: one scale per output column of a [K, N] matrix
        if len(shapes.get(scale, ())) == 1 and len(shapes.get(value, ())) == 2:
            attrs["axis"] = 1
        name = f"{base}/dequantized"
        operands = [value, scale, zero] if zero else [value, scale]
        out.append(helper.make_node("DequantizeLinear", operands, [name], name=name, **attrs))
        return name

    def float_product(node) -> list:
        """MatMulIntegerToFloat(a, b, a_scale, b_scale, [a_zero], [b_zero], [bias]) in float."""
        a, b, a_scale, b_scale, *rest = list(node.input) + [""] * (7 - len(node.input))
        a_zero, b_zero, bias = rest[:3]
        base = node.name or node.output[0]
        new: list = []
        operands = [
            float_input(a, a_scale, a_zero, f"{base}/a", new),
            float_input(b, b_scale, b_zero, f"{base}/b", new),
        ]
        product = f"{base}/float" if bias else node.output[0]
        new.append(helper.make_node("MatMul", operands, [product], name=f"{base}/matmul"))
        if bias:
            new.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{base}/bias"))
        return new

    replaced: dict[int, list] = {}  # position of a QLinearMatMul -> the nodes in its place
    dropped: set[int] = set()  # positions of the DequantizeLinear nodes the MatMul replaces
    for position, node in enumerate(original):
        if node.op_type == "MatMulIntegerToFloat":
            replaced[position] = float_product(node)
            continue
        if node.op_type != "QLinearMatMul":
            continue
        a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero = node.input
        base = node.name or node.output[0]
        new: list = []
        operands = [
            float_input(a, a_scale, a_zero, f"{base}/a", new),
            float_input(b, b_scale, b_zero, f"{base}/b", new),
        ]
        users = consumers[node.output[0]]
        dequantizers = [u for u in users if original[u].op_type == "DequantizeLinear"]
        product = original[dequantizers[0]].output[0] if len(dequantizers) == 1 else f"{base}/float"
        new.append(helper.make_node("MatMul", operands, [product], name=f"{base}/matmul"))
        if len(dequantizers) == 1:
            dropped.add(dequantizers[0])
        if len(users) != len(dequantizers) or len(dequantizers) > 1:
            # other readers of the int8 output: requantize it for them
            new.append(
                helper.make_node(
                    "QuantizeLinear", [product, y_scale, y_zero], [node.output[0]], name=f"{base}/q"
                )
            )
        replaced[position] = new
    nodes = []
    for position, node in enumerate(original):
        if position not in dropped:
            nodes.extend(replaced.get(position, [node]))
    del graph.node[:]
    graph.node.extend(_without_dead_nodes(nodes, {o.name for o in graph.output}))
    read = {name for node in graph.node for name in node.input}
    unused = [init for init in graph.initializer if init.name not in read]  # activation scales
    for init in unused:
        graph.initializer.remove(init)
    return len(replaced)


def _without_dead_nodes(nodes: list, outputs: set[str]) -> list:
    """Drop nodes none of whose outputs is read (e.g. the activations' QuantizeLinear)."""
    while True:
        read = {name for node in nodes for name in node.input} | outputs
        alive = [node for node in nodes if any(out in read for out in node.output)]
        if len(alive) == len(nodes):
            return alive
        nodes = alive


class OnnxMissing(RuntimeError):
    """The model needs the rewrite but the `onnx` package is not installed."""


def cuda_model_bytes(path: Path) -> tuple[bytes, int] | None:
    """The rewritten graph, serialized, and the number of rewritten nodes; None when the model
    has nothing to rewrite. Raises OnnxMissing when it has and `onnx` is not installed."""
    try:
        import onnx
    except ImportError as exc:
        raise OnnxMissing("install the gpu extra (pip install 'lmroute[gpu]'), which brings onnx") from exc
    model = onnx.load(str(path))
    if not needs_rewrite(model):
        return None
    count = rewrite_int8_matmuls(model)
    return model.SerializeToString(), count
