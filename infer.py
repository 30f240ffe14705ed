"""Label images with a Conformer checkpoint (or an exported MINDIR) in MindSpore.

    python infer.py DATA --checkpoint CKPT --arch ARCH [--output predictions.json] [--topk K]
                    [--class_names FILE_OR_DATASET_DIR] [--mindir PATH] [--batch_size N] [--features F.npz]
                    [--any_yaml_key V]

DATA is one image or a folder (searched recursively).  Prints `/abs/path/img.JPEG (class: 293)`
per image and writes {abs path: class} to --output; unreadable images are reported on stderr
and listed in OUTPUT.errors.json.  --features F.npz also writes each image's embeddings (the
pooled CNN feature and the class token after trans_norm), from the network (not --mindir).
"""
import sys

import mindspore as ms

from src.config import add_checkpoint_arg, parse_args, start_weights
from src.conformer import create_model_from_config, param_count_line
from src.tools.atomic import WriteError
from src.tools.batch_padding import pad_to_batch
from src.tools.checkpoint import CheckpointError, load_weights
from src.tools.console import run_main
from src.tools.device import DeviceError, init_context
from src.tools.export import ExportError, InferenceNet, load_mindir
from src.tools.inference import InferenceError, add_data_args, add_prediction_args, logits_of, predict

PROG = "infer.py"


def _script_args(parser):
    add_data_args(parser, "an image, or a folder of images (searched recursively)")
    add_prediction_args(parser)
    add_checkpoint_arg(parser, "its weights label the images (default: --pretrained)")
    parser.add_argument("--mindir", default="",
                        help="run this MINDIR from export.py instead of building the network "
                             "(then no checkpoint is read; --image_size must be the exported one)")


def _mindir_forward(path: str):
    graph = load_mindir(path)

    def forward(images):
        try:
            outputs = graph(ms.Tensor(images))
        except RuntimeError:  # MindSpore's shape errors span dozens of lines
            raise InferenceError(f"{path} rejected input of shape {images.shape} "
                                 "(exported at another --image_size?)") from None
        return logits_of([o.asnumpy() for o in (outputs if isinstance(outputs, tuple) else (outputs,))])
    return forward


def _network_forward(cfg, batch_size: int):
    net = create_model_from_config(cfg)
    load_weights(net, start_weights(cfg))
    # stderr: stdout carries exactly one line per image
    print(param_count_line(net, cfg.arch), file=sys.stderr, flush=True)
    summed = InferenceNet(net, with_features=bool(cfg.features))
    summed.set_train(False)
    if cfg.features:  # (logits, conv features, transformer features)
        return pad_to_batch(lambda images: tuple(o.asnumpy() for o in summed(ms.Tensor(images))), batch_size)
    return pad_to_batch(lambda images: summed(ms.Tensor(images)).asnumpy(), batch_size)


def _build_forward(cfg):
    def build(batch_size: int):
        init_context(cfg)
        return _mindir_forward(cfg.mindir) if cfg.mindir else _network_forward(cfg, batch_size)
    return build


def main() -> int:
    cfg = parse_args(script="infer.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    if cfg.features and cfg.mindir:
        print(f"{PROG}: error: --features reads the embeddings from the network: give a --checkpoint instead of "
              "--mindir (or export ONNX with --export_features and use infer_onnx.py --features)", file=sys.stderr)
        return 2
    try:
        return predict(cfg, PROG, _build_forward(cfg))
    except (InferenceError, CheckpointError, DeviceError, ExportError, WriteError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run_main(main))
