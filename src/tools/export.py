"""Export a network to ONNX / MINDIR with the exportable op formulations switched on."""
import os

import mindspore as ms
from mindspore import nn

from ..layers.exportable_ops import set_exportable


def export_model(net: nn.Cell, example_input: ms.Tensor, path: str, file_format: str = "ONNX") -> str:
    """Write `net` (eval mode) traced at `example_input`'s shape; returns the written file's path."""
    net.set_train(False)
    set_exportable(net, True)
    try:
        base, _ = os.path.splitext(path)
        ms.export(net, example_input, file_name=base, file_format=file_format)
    finally:
        set_exportable(net, False)
    return f"{base}.{file_format.lower()}"
