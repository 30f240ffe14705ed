"""Label images with a Conformer checkpoint (or an exported MINDIR) in MindSpore.

    python infer.py DATA --checkpoint CKPT --arch ARCH [--output predictions.json] [--topk K]
                    [--class_names FILE_OR_DATASET_DIR] [--mindir PATH] [--batch_size N] [--features F.npz]
                    [--any_yaml_key V]

DATA is one image or a folder (searched recursively).  Prints `/abs/path/img.JPEG (class: 293)`
per image and writes {abs path: class} to --output; unreadable images are reported on stderr
and listed in OUTPUT.errors.json.  With --val_labels CSV (docs/inference.md "Labels files") one more line on
stderr gives the top-1 / top-5 of the images that CSV labels.  --features F.npz also writes each
image's embeddings (the pooled CNN feature and the class token after trans_norm), from the network
(not --mindir).
"""
import sys

from src.checkpoint import load_weights
from src.checkpoint_settings import apply_checkpoint_settings
from src.config import add_checkpoint_arg, parse_args, start_weights
from src.conformer import create_model_from_config, param_count_line
from src.deploy.export import load_mindir
from src.inference.heads import logits_of
from src.inference.images import InferenceError, add_data_args
from src.inference.network import InferenceNet, inference_network, numpy_forward
from src.inference.predict import add_prediction_args, predict
from src.inference.tta import with_tta
from src.runtime.console import run_main
from src.runtime.device import init_context
import mindspore as ms  # after src: src/__init__.py sets MindSpore's log level first

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


def _network_forward(cfg, batch_size: int, checkpoint):
    net = create_model_from_config(cfg)
    load_weights(net, start_weights(cfg), checkpoint=checkpoint)
    # stderr: stdout carries exactly one line per image
    print(param_count_line(net, cfg.arch), file=sys.stderr, flush=True)
    if cfg.features:  # (logits, conv features, transformer features): AMP around InferenceNet, whose
        # forward_embeddings an O2/O3 wrapper would hide
        outputs = inference_network(InferenceNet(net, with_features=True), cfg.amp_level)
    else:  # the heads come out of AMP in float32 and are summed there, as eval.py sums them
        outputs = InferenceNet(inference_network(net, cfg.amp_level))
        outputs.set_train(False)
    return with_tta(numpy_forward(outputs, batch_size), cfg.tta)


def _build_forward(cfg, checkpoint):
    def build(batch_size: int):
        init_context(cfg)
        # the MINDIR is run as exported (its precision is the export's); the flip is averaged outside it
        if cfg.mindir:
            return with_tta(_mindir_forward(cfg.mindir), cfg.tta)
        return _network_forward(cfg, batch_size, checkpoint)
    return build


def main() -> int:
    cfg = parse_args(script="infer.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    checkpoint = None if cfg.mindir else apply_checkpoint_settings(cfg, start_weights(cfg), PROG)
    if cfg.features and cfg.mindir:
        raise InferenceError("--features reads the embeddings from the network: give a --checkpoint instead of "
                             "--mindir (or export ONNX with --export_features and use infer_onnx.py --features)")
    return predict(cfg, PROG, _build_forward(cfg, checkpoint))


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
