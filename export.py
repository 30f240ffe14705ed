"""Export a trained Conformer to MINDIR, ONNX or AIR for deployment.

    python export.py --config CFG --file_format {MINDIR,ONNX,AIR} --checkpoint CKPT --arch ARCH
                     [--output PATH] [--export_heads] [--export_features]

The graph takes float32 images [batch, 3, image_size, image_size] (eval-transformed, see
src/data/preprocess.py) and returns the summed logits of the two heads, the official
inference output.  ONNX (opset 11) and MINDIR take any batch size; the ONNX input is named
'images' and the output 'logits' (plus 'conv_logits', 'trans_logits' with --export_heads, then
'conv_features', 'transformer_features' with --export_features).
A checkpoint is required: random weights are never exported.
"""
import os
import sys

import numpy as np

from src.checkpoint import load_weights
from src.checkpoint_settings import apply_checkpoint_settings
from src.config import add_checkpoint_arg, add_output_arg, parse_args, start_weights
from src.conformer import create_model_from_config, param_count_line
from src.deploy.export import ExportError, export_model, output_names
from src.deploy.formats import EXTENSIONS
from src.inference.network import InferenceNet
from src.runtime.console import run_main
from src.runtime.device import init_context
import mindspore as ms  # after src: src/__init__.py sets MindSpore's log level first

PROG = "export.py"


def _script_args(parser):
    add_checkpoint_arg(parser, "its weights are exported (default: --pretrained)")
    add_output_arg(parser, "a file, or an existing folder (default: ARCH.mindir / .onnx / .air in the current "
                           "directory)")
    parser.add_argument("--export_heads", action="store_true",
                        help="also output each head's logits after the summed ones")
    parser.add_argument("--export_features", action="store_true",
                        help="also output the embeddings, last: conv_features [B, C] (the pooled CNN feature) and "
                             "transformer_features [B, E] (the class token after trans_norm); infer_onnx.py "
                             "--features reads them")


def _check_air(cfg) -> None:
    """AIR is written by MindSpore's Ascend backend only: say so before anything is built."""
    if cfg.file_format == "AIR" and (cfg.device_target != "Ascend" or not ms.hal.is_available("Ascend")):
        raise ExportError("AIR export needs an Ascend device (--device_target Ascend with MindSpore's "
                          "Ascend build); use --file_format MINDIR or ONNX here")


def main() -> int:
    cfg = parse_args(script="export.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    checkpoint = apply_checkpoint_settings(cfg, start_weights(cfg), PROG)
    default_name = cfg.arch + EXTENSIONS[cfg.file_format]
    path = os.path.join(cfg.output, default_name) if os.path.isdir(cfg.output) else cfg.output or default_name
    _check_air(cfg)
    init_context(cfg)
    net = create_model_from_config(cfg)
    load_weights(net, start_weights(cfg), checkpoint=checkpoint)
    print(param_count_line(net, cfg.arch), flush=True)
    example = ms.Tensor(np.zeros((1, 3, cfg.image_size, cfg.image_size), np.float32))
    names = output_names(cfg.export_heads, cfg.export_features)
    path = export_model(InferenceNet(net, cfg.export_heads, cfg.export_features), example, path, cfg.file_format,
                        names)
    print(f"exported {cfg.arch} ({cfg.file_format}, outputs: {', '.join(names)}) "
          f"to {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
