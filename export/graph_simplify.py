"""Remove per-run bookkeeping from an exported encoder graph without changing a single output bit.

The legacy exporter computes every attention Reshape's target shape at run time
(Shape -> Gather -> Unsqueeze -> Concat), and guards each softmax with Where(IsNaN(p), 0, p)
for rows whose keys are all masked. On the CPU at batch 1 these ~200 tiny nodes cost a few
percent of a prompt's time (measured: 3-5% more prompts/s, bit-identical outputs):
- a Reshape whose dynamic dims are the same symbolic dims, in the same positions, as its
  input's gets a constant target (ONNX Reshape's 0 = "copy this dim from the input");
- the NaN guard is dropped: the tokenizer always adds [CLS] and [SEP], so no attention row is
  ever fully masked and the softmax never yields NaN.
Nodes and initializers left without consumers are then removed.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference


def simplify_graph(model: onnx.ModelProto) -> dict[str, int]:
    """Simplify `model` in place; returns what was changed, for the manifest."""
    graph = model.graph
    before = len(graph.node)
    static = _static_reshapes(model)
    guards = _drop_nan_guards(graph)
    _drop_unused(graph)
    return {
        "static_reshapes": static,
        "softmax_nan_guards_removed": guards,
        "nodes_before": before,
        "nodes_after": len(graph.node),
    }


def _symbolic_dims(model: onnx.ModelProto) -> dict[str, list]:
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    g = inferred.graph
    return {
        vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*g.value_info, *g.input, *g.output]
    }


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _static_reshapes(model: onnx.ModelProto) -> int:
    graph = model.graph
    dims = _symbolic_dims(model)
    consts = _constants(graph)
    producer = {out: node for node in graph.node for out in node.output}

    def shape_part(name: str, data_dims: list, position: int) -> list[int] | None:
        """A Concat input of a Reshape's target: constant values, or [0] for a dim read with
        Shape/Gather from a tensor whose dim is the data's dim at the same position."""
        if name in consts:
            return [int(v) for v in consts[name].reshape(-1)]
        unsqueeze = producer.get(name)
        gather = producer.get(unsqueeze.input[0]) if unsqueeze and unsqueeze.op_type == "Unsqueeze" else None
        if gather is None or gather.op_type != "Gather" or gather.input[1] not in consts:
            return None
        shape = producer.get(gather.input[0])
        if shape is None or shape.op_type != "Shape" or shape.attribute or shape.input[0] not in dims:
            return None
        dim = dims[shape.input[0]][int(consts[gather.input[1]])]
        same = position < len(data_dims) and isinstance(dim, str) and data_dims[position] == dim
        return [0] if same else None

    changed = 0
    for node in graph.node:
        concat = producer.get(node.input[1]) if node.op_type == "Reshape" else None
        if concat is None or concat.op_type != "Concat" or node.input[0] not in dims:
            continue
        if any(a.name == "allowzero" and a.i for a in node.attribute):
            continue  # 0 would mean a literal zero there
        target: list[int] = []
        for part in concat.input:
            values = shape_part(part, dims[node.input[0]], len(target))
            if values is None:
                break
            target += values
        else:
            name = f"{node.name}_static_shape"
            graph.initializer.append(numpy_helper.from_array(np.array(target, np.int64), name))
            node.input[1] = name
            changed += 1
    return changed


def _drop_nan_guards(graph: onnx.GraphProto) -> int:
    producer = {out: node for node in graph.node for out in node.output}
    outputs = {o.name for o in graph.output}
    removed = 0
    for node in list(graph.node):
        if node.op_type != "Where" or node.output[0] in outputs:
            continue
        isnan = producer.get(node.input[0])
        if isnan is None or isnan.op_type != "IsNaN" or isnan.input[0] != node.input[2]:
            continue
        for consumer in graph.node:
            for i, name in enumerate(consumer.input):
                if name == node.output[0]:
                    consumer.input[i] = node.input[2]
        graph.node.remove(node)
        removed += 1
    return removed


def _drop_unused(graph: onnx.GraphProto) -> None:
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [node for node in graph.node if not any(out in used for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
