"""Every op of the inference graph exports: converted official weights in onnxruntime match PyTorch;
the graph cleanup (src/tools/onnx_cleanup.py) and the onnxruntime session settings.

Tiny at 224 is exported through export.py in test_export.py."""
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import mindspore as ms
from onnx import helper, numpy_helper

import eval_onnx
import infer_onnx
from src.config import parse_args
from src.conformer import create_model
from src.layers.exportable_ops import GELU
from src.tools.export import InferenceNet, export_model, output_names
from src.tools.inference import onnx_forward
from src.tools.onnx_cleanup import clean_graph
from test_fidelity import build_from_fixture


def _ort_outputs(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


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
    assert fused["Gelu"] == gelus and fused["LayerNormalization"] > 0, fused
    forward = onnx_forward(path, "CPU", 32)
    for batch in (1, 7):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        conv_logits, trans_logits = (o.asnumpy() for o in net(ms.Tensor(x)))
        expected = conv_logits + trans_logits
        np.testing.assert_allclose(forward(x), expected, rtol=0, atol=1e-4 * max(1.0, np.abs(expected).max()))


def _graph(nodes, initializers, output_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, output_shape)],
                              [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in initializers.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def test_cleanup_leaves_lookalike_patterns_alone():
    # |x| * 0.5 + x * 0.5 is no GELU (no Exp); ReduceSumSquare / 3 over 4 values is no variance
    not_gelu = _graph([helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Add", ["x", "a"], ["s"]),
                       helper.make_node("Mul", ["s", "half"], ["y"])], {"half": 0.5}, [2, 4])
    not_variance = _graph([helper.make_node("ReduceSumSquare", ["x"], ["q"], axes=[1], keepdims=1),
                           helper.make_node("Div", ["q", "three"], ["y"])], {"three": 3.0}, [2, 1])
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    for model in (not_gelu, not_variance):
        before = [n.op_type for n in model.graph.node]
        expected = _ort_outputs(model.SerializeToString(), x)
        assert clean_graph(model) == {"identity_casts": 0, "layer_norms": 0, "gelus": 0}
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
