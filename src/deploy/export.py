"""Export a network to ONNX / MINDIR / AIR with a dynamic batch (AIR, Ascend only: at the example's
batch), and load a MINDIR back for inference; how each format gets its dynamic batch: docs/export.md."""
import os
import stat

import numpy as np
import onnx
import onnxruntime as ort
import mindspore as ms
from mindspore import nn
from onnx import numpy_helper

from src.deploy.onnx_inference import FEATURE_OUTPUTS
from src.deploy.formats import EXTENSIONS
from src.deploy.onnx_cleanup import clean_graph
from src.errors import ConformerError, first_line
from src.io import staging_folder
from src.kernels import set_plain_kernels
from src.layers.conv2d import set_plain_convs
from src.layers.exportable_ops import set_exportable

INPUT_NAME = "images"
BATCH_DIM = "batch"
# The ONNX trace batch: a value that is no other dimension of a Conformer at the usual sizes
# (heads 3/6/9, qkv 3, tokens 5/17/197, maps 1-112), so only batch-carrying constants contain it.
_ONNX_TRACE_BATCH = 13


class ExportError(ConformerError, RuntimeError):
    """An export that cannot be done or did not come out right (one line)."""


def output_names(with_heads: bool, with_features: bool = False) -> tuple:
    """Names of InferenceNet's outputs, in order."""
    return (("logits",) + (("conv_logits", "trans_logits") if with_heads else ())
            + (FEATURE_OUTPUTS if with_features else ()))


def output_path(path: str, file_format: str) -> str:
    """`path` with the format's extension appended unless it already ends with it."""
    extension = EXTENSIONS[file_format]
    return path if path.lower().endswith(extension) else path + extension


def export_model(net: nn.Cell, example_input: ms.Tensor, path: str, file_format: str = "ONNX",
                 output_names: tuple = None) -> str:
    """Write `net` (eval mode) for inputs shaped like `example_input`; returns the file's path.

    ONNX and MINDIR get a dynamic batch dimension.  The file appears atomically:
    an interrupted export leaves no partial file at `path`, a failed write (full disk, unwritable
    folder) raises WriteError naming `path`.  For ONNX the input
    is named 'images' and the outputs `output_names` (MindSpore's numeric names
    if None).
    """
    path = output_path(path, file_format)
    net.set_train(False)
    # an exported file runs wherever it is taken, so it holds the plain Conv2D op, not the CPU formulation,
    # and MindSpore's own ops, not the CPU kernels
    set_plain_convs(net, True)
    set_plain_kernels(net, True)
    try:
        with staging_folder(path) as tmp:
            base = os.path.join(tmp, "model")
            if file_format == "ONNX":
                written = _export_onnx(net, example_input.shape[1:], base, output_names)
            else:
                if file_format == "MINDIR":
                    example_input = ms.Tensor(shape=[None, *example_input.shape[1:]], dtype=example_input.dtype)
                ms.export(net, example_input, file_name=base, file_format=file_format)
                written = base + EXTENSIONS[file_format]
            os.replace(written, path)
    finally:
        set_plain_convs(net, False)
        set_plain_kernels(net, False)
    return path


def _export_onnx(net: nn.Cell, sample_shape: tuple, base: str, names) -> str:
    """Trace at _ONNX_TRACE_BATCH, make the batch dynamic, name the tensors; returns the final file."""
    # Erf has no ONNX exporter: GELU switches to its exportable form for this trace only.
    # MINDIR and AIR carry Erf and keep the exact, faster form.
    set_exportable(net, True)
    try:
        trace = ms.Tensor(np.zeros((_ONNX_TRACE_BATCH, *sample_shape), np.float32))
        ms.export(net, trace, file_name=base, file_format="ONNX")
    finally:
        set_exportable(net, False)
    model = onnx.load(base + ".onnx")
    _make_batch_dynamic(model.graph, _ONNX_TRACE_BATCH)
    _rename_tensor(model.graph, model.graph.input[0].name, INPUT_NAME)
    for output, name in zip(list(model.graph.output), names or ()):
        _rename_tensor(model.graph, output.name, name)
    before = model.SerializeToString()
    clean_graph(model)
    onnx.checker.check_model(model)
    final = base + ".dynamic.onnx"  # a new file: MindSpore leaves its own output read-only
    onnx.save(model, final)
    os.chmod(final, stat.S_IRUSR)  # the same mode as MindSpore's MINDIR and checkpoint files
    _check_outputs(before, final, sample_shape)
    return final


def _make_batch_dynamic(graph, batch: int) -> None:
    """Replace the traced batch size by the symbol BATCH_DIM / -1 throughout an ONNX graph."""
    for value in (*graph.input, *graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_value != batch:
            raise ExportError(f"ONNX {value.name!r} has leading dim {dim.dim_value}, expected the traced "
                              f"batch {batch}")
        dim.dim_param = BATCH_DIM  # dim_value and dim_param are a oneof: this clears the value
    del graph.value_info[:]  # intermediate shapes, if any, were inferred at the traced batch
    constants = {n.output[0]: a.t for n in graph.node if n.op_type == "Constant" for a in n.attribute
                 if a.name == "value"}
    constants.update({t.name: t for t in graph.initializer})
    for node in graph.node:
        tensor = constants.get(node.input[1]) if node.op_type == "Reshape" else None
        if tensor is None:
            continue
        shape = numpy_helper.to_array(tensor).copy()
        if shape.size and shape[0] == batch and -1 not in shape:
            shape[0] = -1  # the other dims are fixed, so -1 recovers the batch
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))


def _rename_tensor(graph, old: str, new: str) -> None:
    """Rename a graph input/output tensor everywhere it is produced or consumed."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output):
        if value.name == old:
            value.name = new


def _check_outputs(before: bytes, path: str, sample_shape: tuple) -> None:
    """In onnxruntime, the written graph at batch 2 must give the rewritten-from graph's outputs, and
    batch 1 its first rows: else a rewrite went wrong or the graph still holds the traced batch."""
    x = np.random.default_rng(0).standard_normal((2, *sample_shape)).astype(np.float32)
    try:
        reference = _ort_session(before).run(None, {INPUT_NAME: x})
        session = _ort_session(path)
        pair = session.run(None, {INPUT_NAME: x})
        single = session.run(None, {INPUT_NAME: x[:1]})
    except Exception as e:  # onnxruntime's errors have no common base class
        raise ExportError(f"the ONNX graph does not run at batch 1 and 2 ({first_line(e)})") from None
    for r, p, s in zip(reference, pair, single):
        tolerance = 1e-4 * max(1.0, float(np.abs(r).max()))
        if p.shape[0] != 2 or np.abs(p[:1] - s).max() > tolerance:
            raise ExportError("the ONNX graph still depends on the traced batch size")
        if np.abs(p - r).max() > tolerance:
            raise ExportError("the ONNX graph cleanup changed the outputs (src/deploy/onnx_cleanup.py)")


def _ort_session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def load_mindir(path: str) -> nn.Cell:
    """An exported MINDIR as a callable cell (nn.GraphCell); problems are one ExportError line."""
    if not os.path.isfile(path):
        raise ExportError(f"MINDIR file not found: {path}")
    try:
        return nn.GraphCell(ms.load(path))
    except (RuntimeError, ValueError, OSError, TypeError) as e:
        raise ExportError(f"{path}: not a loadable MINDIR ({first_line(e)})") from None
