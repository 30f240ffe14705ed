"""Every op of the inference graph exports: converted official weights in onnxruntime match PyTorch;
the graph cleanup (src/deploy/onnx_cleanup.py) and the onnxruntime session settings.

Tiny at 224 is exported through export.py in test_export.py."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import mindspore as ms
from mindspore import nn
from onnx import helper, numpy_helper

import eval_onnx
import infer_onnx
from src.config import parse_args
from src.conformer import create_model
from src.deploy.export import export_model, output_names
from src.inference.network import InferenceNet
from src.deploy.onnx_inference import onnx_forward
from src.deploy.onnx_cleanup import clean_graph
from src.layers.exportable_ops import GELU
from src.layers.fcu import FCUUp
from test_fidelity import build_from_fixture


def _ort_outputs(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_converted_official_weights_onnx_within_1e4(tmp_path):
    net, ref, _ = build_from_fixture("official_p32")
    x = ref["input"]
    got = _ort_outputs(export_model(net, ms.Tensor(x), str(tmp_path / "p32.onnx")), x)
    np.testing.assert_allclose(got[0], ref["conv_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[1], ref["trans_logits"], rtol=0, atol=1e-4)


ARCH = "conformer_reduced_patch16"


@pytest.fixture(scope="module")
def reduced_onnx(tmp_path_factory):
    """(ONNX path, the seeded reduced net it was exported from) at 32 px."""
    ms.set_seed(3)
    net = create_model(ARCH, num_classes=5)
    net.set_train(False)
    path = export_model(InferenceNet(net), ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)),
                        str(tmp_path_factory.mktemp("onnx") / "reduced.onnx"), "ONNX", output_names(False))
    return path, net


def test_cleaned_graph_fuses_in_onnxruntime_and_keeps_outputs_at_batch_1_and_7(reduced_onnx, tmp_path):
    path, net = reduced_onnx
    graph = onnx.load(path).graph
    ops = Counter(n.op_type for n in graph.node)
    gelus = sum(isinstance(cell, GELU) for _, cell in net.cells_and_names())
    assert ops["Erf"] == gelus and not ops["Abs"] and not ops["ReduceSumSquare"], ops
    types = {v.name: v.type.tensor_type.elem_type
             for v in onnx.shape_inference.infer_shapes(onnx.load(path)).graph.value_info}
    types.update({t.name: t.data_type for t in graph.initializer})
    assert not [n.name for n in graph.node if n.op_type == "Cast" and types.get(n.input[0]) == n.attribute[0].i]
    # onnxruntime's own optimiser turns the rewritten patterns into single kernels
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    fused = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    layer_norms = sum(isinstance(cell, nn.LayerNorm) for _, cell in net.cells_and_names())
    assert fused["Gelu"] + fused["BiasGelu"] == gelus and fused["LayerNormalization"] == layer_norms, fused
    # token linear layers are MatMul on [B, N, K]; only the two heads (on [B, K]) stay Gemm
    dense = sum(isinstance(cell, nn.Dense) for _, cell in net.cells_and_names())
    assert ops["Gemm"] == 2 and ops["MatMul"] >= dense - 2, ops
    upsamples = sum(isinstance(cell, FCUUp) and cell.up_stride > 1 for _, cell in net.cells_and_names())
    assert ops["Resize"] == upsamples and not ops["Tile"], ops
    (pool,) = [n for n in graph.node if n.op_type == "MaxPool"]
    assert helper.get_attribute_value(next(a for a in pool.attribute if a.name == "pads")) == [1, 1, 1, 1]
    forward = onnx_forward(path, "CPU", 32)
    for batch in (1, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        conv_logits, trans_logits = (o.asnumpy() for o in net(ms.Tensor(x)))
        expected = conv_logits + trans_logits
        np.testing.assert_allclose(forward(x), expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


def _graph(nodes, initializers, output_shape, input_shape=(2, 4)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output_shape)],
                              [numpy_helper.from_array(np.array(v, np.int64 if k.startswith("i_") else np.float32), k)
                               for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def _edge_padded_max_pool(kernel):
    """exportable_ops.TorchMaxPool2d's export: edge padding by Slice/Concat on H then W, then MaxPool."""
    nodes = []
    for axis, source, padded in ((2, "x", "h"), (3, "h", "hw")):
        nodes += [helper.make_node("Slice", [source, "i_zero", "i_one", f"i_axis{axis}"], [f"{padded}_first"]),
                  helper.make_node("Slice", [source, "i_minus_one", "i_big", f"i_axis{axis}"], [f"{padded}_last"]),
                  helper.make_node("Concat", [f"{padded}_first", source, f"{padded}_last"], [padded], axis=axis)]
    nodes.append(helper.make_node("MaxPool", ["hw"], ["y"], kernel_shape=[kernel, kernel], strides=[1, 1]))
    constants = {"i_zero": [0], "i_one": [1], "i_minus_one": [-1], "i_big": [1000], "i_axis2": [2], "i_axis3": [3]}
    return _graph(nodes, constants, [1, 2, 7 - kernel, 7 - kernel], (1, 2, 5, 5))


def test_edge_padded_max_pool_becomes_one_padded_max_pool_with_equal_output():
    model = _edge_padded_max_pool(kernel=3)
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
    expected = _ort_outputs(model.SerializeToString(), x)[0]
    assert clean_graph(model)["max_pools"] == 1
    assert [n.op_type for n in model.graph.node] == ["MaxPool"]
    np.testing.assert_array_equal(_ort_outputs(model.SerializeToString(), x)[0], expected)


def test_cleanup_leaves_lookalike_patterns_alone():
    # |x| * 0.5 + x * 0.5 is no GELU (no Exp); ReduceSumSquare / 3 over 4 values is no variance
    not_gelu = _graph([helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Add", ["x", "a"], ["s"]),
                       helper.make_node("Mul", ["s", "half"], ["y"])], {"half": 0.5}, [2, 4])
    not_variance = _graph([helper.make_node("ReduceSumSquare", ["x"], ["q"], axes=[1], keepdims=1),
                           helper.make_node("Div", ["q", "three"], ["y"])], {"three": 3.0}, [2, 1])
    # a Gemm on [B, K] (the heads) has no token axis to keep
    head = _graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                  {"w": np.ones((3, 4)), "b": np.arange(3.0)}, [2, 3])
    # a 1x1 max-pool would see a padded cell alone: -inf padding is not edge padding there
    pool_1x1 = _edge_padded_max_pool(kernel=1)
    # Tile by (2, 3) is no s x s nearest upsampling
    uneven_tile = _graph([helper.make_node("Reshape", ["x", "i_split"], ["s"]),
                          helper.make_node("Tile", ["s", "i_repeats"], ["t"]),
                          helper.make_node("Reshape", ["t", "i_merge"], ["y"])],
                         {"i_split": [-1, 2, 3, 1, 3, 1], "i_repeats": [1, 1, 1, 2, 1, 3], "i_merge": [-1, 2, 6, 9]},
                         [1, 2, 6, 9], (1, 2, 3, 3))
    rng = np.random.default_rng(0)
    for model in (not_gelu, not_variance, head, pool_1x1, uneven_tile):
        x = rng.standard_normal([d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim])
        x = x.astype(np.float32)
        before = [n.op_type for n in model.graph.node]
        expected = _ort_outputs(model.SerializeToString(), x)
        assert not any(clean_graph(model).values())
        assert [n.op_type for n in model.graph.node] == before
        np.testing.assert_array_equal(_ort_outputs(model.SerializeToString(), x)[0], expected[0])


def test_session_options_are_applied(reduced_onnx):
    options = onnx_forward(reduced_onnx[0], "CPU", 32, threads=1).session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.enable_cpu_mem_arena
    assert onnx_forward(reduced_onnx[0], "CPU", 32).session.get_session_options().intra_op_num_threads == 0


def test_ort_threads_option_reaches_the_scripts():
    for script in (infer_onnx, eval_onnx):
        cfg = parse_args(["data", "--onnx_path", "m.onnx", "--ort_threads", "3"], add_script_args=script._script_args)
        assert cfg.ort_threads == 3
        with pytest.raises(SystemExit):
            parse_args(["data", "--onnx_path", "m.onnx", "--ort_threads", "-1"], add_script_args=script._script_args)
