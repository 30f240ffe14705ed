"""Rewrite MindSpore's ONNX export into the forms onnxruntime fuses into single kernels or runs fastest;
each rewrite checks its pattern structurally and leaves anything else untouched, and export.py compares
the outputs before and after in onnxruntime (what each rewrite does and why: docs/export.md "ONNX")."""
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
    counts["linear_layers"] = _linear_as_matmul(model)
    counts["max_pools"] = _padded_max_pool(graph)
    counts["upsamples"] = _nearest_resize(model)
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


def _attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _producers(nodes: list) -> dict:
    """{tensor name: index of the node writing it}."""
    return {name: i for i, node in enumerate(nodes) for name in node.output}


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
        attributes = _attributes(node)
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
    _rebuild(graph, nodes, replaced, dropped)
    return len(replaced)


def _dims(types: dict, name: str):
    """Static dims of a tensor (0 where unknown), or None when its rank is unknown."""
    value = types.get(name)
    if value is None or not value.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else 0 for d in value.shape.dim]


def _single_consumer(nodes: list, uses: dict, name: str, op_type: str):
    """The node reading `name` when it is the only one and of `op_type`, else None."""
    readers = uses.get(name, [])
    if len(readers) != 1 or nodes[readers[0]].op_type != op_type:
        return None
    return nodes[readers[0]]


def _rebuild(graph, nodes: list, replaced: dict, dropped: set) -> None:
    """Rewrite graph.node from `nodes`: index -> replacement list, indices in `dropped` removed."""
    del graph.node[:]
    for i, node in enumerate(nodes):
        if i not in dropped:
            graph.node.extend(replaced.get(i, [node]))


def _linear_as_matmul(model: onnx.ModelProto) -> int:
    """Reshape(x [B, N, ...] -> [B*N, K]), Gemm(W, b, transB), Reshape -> MatMul(x [B, N, K], W^T), Add(b).

    A 4-D x (the attention heads before proj) is first merged to [B, N, K] by a Reshape
    with shape [0, 0, -1]; the closing Reshape stays unless it restores [B, N, out].
    """
    graph = model.graph
    types, values = _infer_value_info(model), _constant_values(graph)
    initializers = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)
    uses, producer = _consumers(nodes), _producers(nodes)
    replaced, dropped = {}, set()
    for i, gemm in enumerate(nodes):
        attributes = _attributes(gemm)
        if (gemm.op_type != "Gemm" or attributes.get("transB") != 1 or attributes.get("transA", 0)
                or attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0
                or gemm.input[0] not in producer or gemm.input[1] not in initializers
                or len(uses[gemm.input[1]]) != 1 or (len(gemm.input) > 2 and gemm.input[2] not in values)):
            continue
        bias = gemm.input[2] if len(gemm.input) > 2 else None
        flatten = nodes[producer[gemm.input[0]]]
        unflatten = _single_consumer(nodes, uses, gemm.output[0], "Reshape")
        x = flatten.input[0]
        x_dims, flat_dims = _dims(types, x), _dims(types, flatten.output[0])
        weight = numpy_helper.to_array(initializers[gemm.input[1]])
        if (flatten.op_type != "Reshape" or len(uses[flatten.output[0]]) != 1 or unflatten is None
                or x_dims is None or len(x_dims) not in (3, 4) or not all(x_dims[1:]) or flat_dims is None
                or len(flat_dims) != 2 or flat_dims[1] != int(np.prod(x_dims[2:])) or weight.ndim != 2
                or (bias and values[bias].shape not in ((weight.shape[0],), (1, weight.shape[0])))):
            continue
        new = []
        if len(x_dims) == 4:
            shape = f"{gemm.name}_tokens_shape"
            graph.initializer.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), shape))
            new.append(helper.make_node("Reshape", [x, shape], [f"{gemm.name}_tokens"], name=f"{gemm.name}_tokens"))
            x = f"{gemm.name}_tokens"
        initializers[gemm.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(weight.T), gemm.input[1]))
        target = values.get(unflatten.input[1])
        keeps_tokens = (target is not None and len(target) == 3 and target[0] in (-1, 0)
                        and list(target[1:]) == [x_dims[1], weight.shape[0]])
        out = unflatten.output[0] if keeps_tokens else f"{gemm.name}_tokens_out"
        product = f"{gemm.name}_product" if bias else out
        new.append(helper.make_node("MatMul", [x, gemm.input[1]], [product], name=f"{gemm.name}_MatMul"))
        if bias:
            new.append(helper.make_node("Add", [product, bias], [out], name=f"{gemm.name}_Add"))
        if keeps_tokens:
            dropped.add(uses[gemm.output[0]][0])
        else:
            unflatten.input[0] = out
        replaced[i] = new
        dropped.add(producer[gemm.input[0]])
    _rebuild(graph, nodes, replaced, dropped)
    return len(replaced)


def _edge_slice(values: dict, node, source: str, axis: int):
    """'first' / 'last' when `node` is Slice(source) keeping the first / last entry along `axis`."""
    if node is None or node.op_type != "Slice" or len(node.input) < 4 or node.input[0] != source:
        return None
    arrays = [values.get(n) for n in node.input[1:5]] + [np.ones(1)] * (5 - len(node.input))
    if any(v is None or v.size != 1 for v in arrays):
        return None
    starts, ends, axes, steps = (int(v.item()) for v in arrays)
    if axes != axis or steps != 1:
        return None
    if (starts, ends) == (0, 1):
        return "first"
    return "last" if starts == -1 and ends >= 1 else None


def _edge_padded(nodes: list, producer: dict, values: dict, name: str, axis: int):
    """When `name` is Concat(axis)(Slice first, x, Slice last) of one x, returns (x, node indices)."""
    if name not in producer:
        return None
    concat = nodes[producer[name]]
    if concat.op_type != "Concat" or _attributes(concat).get("axis") != axis or len(concat.input) != 3:
        return None
    first, x, last = concat.input
    ends = [nodes[producer[n]] if n in producer else None for n in (first, last)]
    if [_edge_slice(values, node, x, axis) for node in ends] != ["first", "last"]:
        return None
    return x, {producer[name], producer[first], producer[last]}


def _padded_max_pool(graph) -> int:
    """MaxPool(VALID) over a map edge-padded by one on H and W (Slice/Concat) -> MaxPool(pads=1).

    Equal because with kernel >= 2 every window holding a padded cell also holds the edge
    cell it copies, so padding with -inf (the ONNX semantics) gives the same maxima.
    """
    values = _constant_values(graph)
    nodes = list(graph.node)
    uses, producer = _consumers(nodes), _producers(nodes)
    replaced, dropped = {}, set()
    for i, pool in enumerate(nodes):
        attributes = _attributes(pool)
        if (pool.op_type != "MaxPool" or len(pool.output) != 1 or attributes.get("pads", [0] * 4) != [0] * 4
                or attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
                or min(attributes.get("kernel_shape", [1])) < 2 or attributes.get("ceil_mode", 0)
                or any(d != 1 for d in attributes.get("dilations", [1]))):
            continue
        width = _edge_padded(nodes, producer, values, pool.input[0], 3)
        height = width and _edge_padded(nodes, producer, values, width[0], 2)
        if not height:
            continue
        chain = width[1] | height[1]
        if any(u not in chain | {i} for j in chain for o in nodes[j].output for u in uses[o]):
            continue
        attributes.update(auto_pad="NOTSET", pads=[1, 1, 1, 1])
        replaced[i] = [helper.make_node("MaxPool", [height[0]], list(pool.output), name=pool.name, **attributes)]
        dropped |= chain
    _rebuild(graph, nodes, replaced, dropped)
    return len(replaced)


def _nearest_resize(model: onnx.ModelProto) -> int:
    """Reshape(x [B, C, H, W] -> [B, C, H, 1, W, 1]), Tile(1, 1, 1, s, 1, s), Reshape([B, C, sH, sW])
    -> Resize(x, scales (1, 1, s, s), nearest, asymmetric, floor): exactly x repeated s x s."""
    graph = model.graph
    types, values = _infer_value_info(model), _constant_values(graph)
    nodes = list(graph.node)
    uses, producer = _consumers(nodes), _producers(nodes)
    replaced, dropped = {}, set()
    for i, tile in enumerate(nodes):
        if tile.op_type != "Tile" or tile.input[0] not in producer:
            continue
        split, repeats = nodes[producer[tile.input[0]]], values.get(tile.input[1])
        merge = _single_consumer(nodes, uses, tile.output[0], "Reshape")
        if split.op_type != "Reshape" or len(uses[split.output[0]]) != 1 or merge is None or repeats is None:
            continue
        x_dims = _dims(types, split.input[0])
        split_shape, merged_shape = values.get(split.input[1]), values.get(merge.input[1])
        if x_dims is None or len(x_dims) != 4 or not all(x_dims[1:]) or split_shape is None or merged_shape is None:
            continue
        _, c, h, w = x_dims
        scale = int(repeats[3]) if len(repeats) == 6 else 0
        if (scale < 1 or list(repeats) != [1, 1, 1, scale, 1, scale] or list(split_shape[1:]) != [c, h, 1, w, 1]
                or list(merged_shape[1:]) != [c, h * scale, w * scale]):
            continue
        roi, scales = f"{tile.name}_roi", f"{tile.name}_scales"
        graph.initializer.append(numpy_helper.from_array(np.zeros(0, np.float32), roi))
        graph.initializer.append(numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), scales))
        replaced[i] = [helper.make_node("Resize", [split.input[0], roi, scales], list(merge.output), name=tile.name,
                                        mode="nearest", coordinate_transformation_mode="asymmetric",
                                        nearest_mode="floor")]
        dropped |= {producer[tile.input[0]], uses[tile.output[0]][0]}
    _rebuild(graph, nodes, replaced, dropped)
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
        producer = _producers(nodes)
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

