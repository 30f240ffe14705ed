"""Label images with an exported ONNX Conformer in onnxruntime: infer.py's outputs, without MindSpore.

    python infer_onnx.py DATA --onnx_path PATH [-m {CPU,GPU}] [--output predictions.json] [--topk K]
                         [--class_names FILE_OR_DATASET_DIR] [--batch_size N] [--prefetch N] [--ort_threads N]
                         [--features F.npz] [--any_yaml_key V]

The ONNX file has a dynamic batch; --image_size must be the one it was exported at.  With
--val_labels CSV one more line on stderr gives the top-1 / top-5 of the images that CSV labels.
--features needs a file exported with export.py --export_features.
"""
import sys

from src.config import parse_args
from src.deploy.onnx_inference import add_onnx_args, onnx_forward
from src.inference.images import add_data_args
from src.inference.predict import add_prediction_args, predict
from src.inference.tta import with_tta
from src.runtime.console import run_main

PROG = "infer_onnx.py"


def _script_args(parser):
    add_data_args(parser, "an image, or a folder of images (searched recursively)")
    add_prediction_args(parser)
    add_onnx_args(parser)


def main() -> int:
    cfg = parse_args(script="infer_onnx.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    device = cfg.ort_device or cfg.device_target
    return predict(cfg, PROG, lambda _: with_tta(onnx_forward(cfg.onnx_path, device, cfg.image_size, cfg.ort_threads,
                                                              features=bool(cfg.features)), cfg.tta))


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
