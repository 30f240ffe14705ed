"""Top-1 / top-5 accuracy of an exported ONNX Conformer on an ImageFolder dataset, in onnxruntime.

    python eval_onnx.py DATASET --onnx_path PATH [--image_size 224] [-m {CPU,GPU}] [--prefetch 16]
                        [--batch_size N] [--ort_threads N] [--results_file R.json] [--any_yaml_key V]

DATASET holds one subfolder per class (sorted names = class indices), or with --val_labels CSV it is
a flat folder labelled by that file (class names indexed by data_url/train_dir's folders); without it
the config's data_url/val_dir is used.  Images get eval.py's preprocessing (src/data/preprocess.py).
"""
import os
import sys

from src.config import add_results_file_arg, parse_args
from src.deploy.onnx_inference import add_onnx_args, onnx_forward
from src.inference.evaluate_images import evaluate_images
from src.inference.images import InferenceError, add_data_args
from src.inference.results_file import results_record, write_results
from src.inference.tta import with_tta
from src.runtime.console import run_main

PROG = "eval_onnx.py"


def _script_args(parser):
    add_data_args(parser, "ImageFolder dataset: one subfolder of images per class (default: data_url/val_dir)",
                  data_default=True)
    add_onnx_args(parser)
    # heads and loss only from a model exported with --export_heads: the default export outputs the
    # summed logits alone, and eval.py's loss is the mean of the heads' cross entropies
    add_results_file_arg(parser, onnx=True)


def main() -> int:
    cfg = parse_args(script="eval_onnx.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    cfg.data = cfg.data or os.path.join(cfg.data_url, cfg.val_dir)
    if not os.path.isdir(cfg.data):
        raise InferenceError(f"dataset folder not found: {cfg.data}")
    forward = with_tta(onnx_forward(cfg.onnx_path, cfg.ort_device or cfg.device_target, cfg.image_size,
                                    cfg.ort_threads, heads=True), cfg.tta)
    results = evaluate_images(cfg, PROG, forward)
    if cfg.results_file:
        write_results(cfg.results_file, results_record(results, results["class_names"]))
    print(f"eval results: {results['printed']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
