"""Rewrite MindSpore's ONNX export into the forms onnxruntime fuses into single kernels.

MindSpore 2.10 writes LayerNorm as ReduceMean, Sub, ReduceSumSquare, Div, Add,
Sqrt, Div, Mul, Add; GELU as exportable_ops' erf polynomial (about 20
element-wise nodes, as MindSpore cannot export Erf); and a float->float Cast
before many nodes.  onnxruntime's optimizer recognises none of these, so every
node runs as its own pass over memory.  The rewrites below stay within opset 11
and give:
- LayerNorm: `ReduceSumSquare / N` becomes `ReduceMean(Pow(x, 2))`, the pattern
  onnxruntime's LayerNormFusion turns into one LayerNormalization kernel;
- GELU: `0.5 * x * (1 + Erf(x / sqrt2))`, which GeluFusion turns into one Gelu
  kernel (exact erf, as MindSpore and PyTorch compute it, where the polynomial
  was accurate to 1.5e-7);
- Casts to the type their input already has are dropped.
Each rewrite checks its pattern structurally and leaves anything else untouched;
export.py compares the outputs before and after in onnxruntime.
"""
import math
from collections import defaultdict

import numpy as np
import onnx
from onnx import helper, numpy_helper

_GELU_OPS = {"Abs", "Mul", "Add", "Sub", "Div", "Neg", "Exp"}  # the erf polynomial of exportable_ops.GELU


def clean_graph(model: onnx.ModelProto) -> dict:
    """Apply every rewrite to `model` in place; returns {rewrite: count} of what was changed."""
    graph = model.graph
    counts = {"identity_casts": _drop_identity_casts(model)}
    counts["layer_norms"] = _layer_norm_pattern(model)
    counts["gelus"] = _exact_gelu(graph)
    _prune(graph)
    del graph.value_info[:]  # inferred types were only needed for the rewrites
    return counts


def _infer_value_info(model: onnx.ModelProto) -> dict:
    """{tensor name: TypeProto.Tensor} from ONNX shape inference, graph inputs and initializers."""
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type for v in (*inferred.value_info, *inferred.input, *inferred.output)}
    for t in model.graph.initializer:
        types[t.name] = helper.make_tensor_type_proto(t.data_type, list(t.dims)).tensor_type
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = helper.get_attribute_value(node.attribute[0])
            if isinstance(value, onnx.TensorProto):
                types[node.output[0]] = helper.make_tensor_type_proto(value.data_type, list(value.dims)).tensor_type
    return types


def _graph_outputs(graph) -> set:
    return {o.name for o in graph.output}


def _replace_uses(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _drop_identity_casts(model: onnx.ModelProto) -> int:
    graph = model.graph
    types = _infer_value_info(model)
    outputs = _graph_outputs(graph)
    dropped = []
    for node in graph.node:
        if node.op_type != "Cast" or node.output[0] in outputs:
            continue
        source = types.get(node.input[0])
        if source is not None and source.elem_type == helper.get_attribute_value(node.attribute[0]):
            _replace_uses(graph, node.output[0], node.input[0])
            dropped.append(node)
    for node in dropped:
        graph.node.remove(node)
    return len(dropped)


def _constant_values(graph) -> dict:
    """{tensor name: numpy array} of initializers and Constant node outputs."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _consumers(nodes: list) -> dict:
    """{tensor name: indices of the nodes reading it}."""
    uses = defaultdict(list)
    for i, node in enumerate(nodes):
        for name in node.input:
            uses[name].append(i)
    return uses


def _scalar(values: dict, name: str):
    value = values.get(name)
    return float(value) if value is not None and value.size == 1 else None


def _layer_norm_pattern(model: onnx.ModelProto) -> int:
    """ReduceSumSquare(x, axes) / N -> ReduceMean(Pow(x, 2), axes) where N is the reduced size."""
    graph = model.graph
    types, values = _infer_value_info(model), _constant_values(graph)
    nodes = list(graph.node)
    uses = _consumers(nodes)
    replaced = {}  # index of ReduceSumSquare -> its two replacement nodes; the Div is dropped
    dropped = set()
    for i, node in enumerate(nodes):
        if node.op_type != "ReduceSumSquare" or len(uses[node.output[0]]) != 1:
            continue
        divide = nodes[uses[node.output[0]][0]]
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        shape = types.get(node.input[0])
        if divide.op_type != "Div" or divide.input[0] != node.output[0] or shape is None or "axes" not in attributes:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in shape.shape.dim]
        reduced = [dims[a] for a in attributes["axes"]]
        if not all(reduced) or _scalar(values, divide.input[1]) != float(np.prod(reduced)):
            continue
        exponent, squared = f"{node.name}_two", f"{node.name}_squared"
        graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), exponent))
        replaced[i] = [
            helper.make_node("Pow", [node.input[0], exponent], [squared], name=f"{node.name}_Pow"),
            helper.make_node("ReduceMean", [squared], [divide.output[0]], name=f"{node.name}_ReduceMean",
                             axes=attributes["axes"], keepdims=attributes.get("keepdims", 1)),
        ]
        dropped.add(uses[node.output[0]][0])
    del graph.node[:]
    for i, node in enumerate(nodes):
        if i not in dropped:
            graph.node.extend(replaced.get(i, [node]))
    return len(replaced)


def _exact_gelu(graph) -> int:
    """exportable_ops.GELU's polynomial, `0.5 * (x + |x| * erf_poly(|x| / sqrt2))`, -> Erf form.

    Found from each Abs(x): the nodes between it and the closing `Mul(Add(x, .), 0.5)`
    must be the polynomial's element-wise ops only, with one Exp, and be used
    nowhere else; they are then replaced by Div, Erf, Add, Mul, Mul.
    """
    values = _constant_values(graph)
    rewritten = 0
    for abs_output in [n.output[0] for n in graph.node if n.op_type == "Abs"]:
        nodes = list(graph.node)  # protobuf messages are unhashable: nodes are handled by index
        uses = _consumers(nodes)
        producer = {o: i for i, n in enumerate(nodes) for o in n.output}
        start = producer[abs_output]
        abs_node, x = nodes[start], nodes[start].input[0]
        region = _reachable(start, lambda i: [u for o in nodes[i].output for u in uses[o]])
        closing = next((i for i in sorted(region) if _is_half_of_sum(nodes, i, x, region, values, producer)), None)
        if closing is None:
            continue
        body = _reachable(closing, lambda i: [producer[n] for n in nodes[i].input if producer.get(n) in region])
        ops = [nodes[i].op_type for i in body if i != closing]
        if (set(ops) - _GELU_OPS or ops.count("Exp") != 1
                or any(u not in body for i in body if i != closing for o in nodes[i].output for u in uses[o])):
            continue
        name, y = abs_node.name or f"gelu{rewritten}", nodes[closing].output[0]
        for key, value in (("sqrt2", math.sqrt(2.0)), ("one", 1.0), ("half", 0.5)):
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), f"{name}_{key}"))
        erf_form = [
            helper.make_node("Div", [x, f"{name}_sqrt2"], [f"{name}_scaled"], name=f"{name}_Div"),
            helper.make_node("Erf", [f"{name}_scaled"], [f"{name}_erf"], name=f"{name}_Erf"),
            helper.make_node("Add", [f"{name}_erf", f"{name}_one"], [f"{name}_cdf2"], name=f"{name}_Add"),
            helper.make_node("Mul", [x, f"{name}_cdf2"], [f"{name}_xcdf2"], name=f"{name}_Mul"),
            helper.make_node("Mul", [f"{name}_xcdf2", f"{name}_half"], [y], name=f"{name}_Half"),
        ]
        kept = [n for i, n in enumerate(nodes) if i not in body]
        position = sum(1 for i in range(start) if i not in body)  # where the Abs was
        del graph.node[:]
        graph.node.extend(kept[:position] + erf_form + kept[position:])
        rewritten += 1
    return rewritten


def _is_half_of_sum(nodes: list, index: int, x: str, region: set, values: dict, producer: dict) -> bool:
    """nodes[index] = Mul(Add(x, t), 0.5) with t computed inside `region`."""
    node = nodes[index]
    if node.op_type != "Mul" or len(node.input) != 2:
        return False
    total, half = node.input if _scalar(values, node.input[1]) == 0.5 else node.input[::-1]
    add = nodes[producer[total]] if total in producer else None
    if _scalar(values, half) != 0.5 or add is None or add.op_type != "Add" or x not in add.input:
        return False
    other = add.input[1] if add.input[0] == x else add.input[0]
    return producer.get(other) in region


def _reachable(start: int, neighbours) -> set:
    """Indices reachable from `start` (included) through `neighbours(index)`."""
    seen, stack = set(), [start]
    while stack:
        i = stack.pop()
        if i not in seen:
            seen.add(i)
            stack.extend(neighbours(i))
    return seen


def _prune(graph) -> None:
    """Drop nodes (Constants included) and initializers nothing uses any more."""
    while True:
        used = {name for node in graph.node for name in node.input} | _graph_outputs(graph)
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)

