"""Top-1 / top-5 accuracy of an exported ONNX Conformer on an ImageFolder dataset, in onnxruntime.

    python eval_onnx.py DATASET --onnx_path PATH [--image_size 224] [-m {CPU,GPU}] [--prefetch 16]
                        [--batch_size N] [--ort_threads N] [--results_file R.json] [--any_yaml_key V]

DATASET holds one subfolder per class (sorted names = class indices); without it the config's
data_url/val_dir is used.  Images get eval.py's preprocessing (src/data/preprocess.py).
"""
import os
import sys

from src.config import parse_args
from src.tools.atomic import WriteError, write_json_atomic
from src.tools.console import run_main
from src.tools.inference import InferenceError, add_data_args, add_onnx_args, evaluate, onnx_forward, with_tta
from src.tools.metrics import results_record

PROG = "eval_onnx.py"


def _script_args(parser):
    add_data_args(parser, "ImageFolder dataset: one subfolder of images per class (default: data_url/val_dir)",
                  data_default=True)
    add_onnx_args(parser)
    # no "loss" and no heads: the exported model outputs the summed logits, and no loss is computed here
    parser.add_argument("--results_file", default="",
                        help="also write the results as JSON to this file (atomically): "
                             "{\"num_images\": N, \"summed\": {\"top1\", \"top5\"}}; "
                             "the printed line is the same with or without it")


def main() -> int:
    cfg = parse_args(script="eval_onnx.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    cfg.data = cfg.data or os.path.join(cfg.data_url, cfg.val_dir)
    try:
        if not os.path.isdir(cfg.data):
            raise InferenceError(f"dataset folder not found: {cfg.data}")
        forward = with_tta(onnx_forward(cfg.onnx_path, cfg.ort_device or cfg.device_target, cfg.image_size,
                                        cfg.ort_threads), cfg.tta)
        results = evaluate(cfg, PROG, forward)
        if cfg.results_file:
            write_json_atomic(cfg.results_file, results_record(
                {"num_images": results["num_images"], "sum": results["exact"]}))
    except (InferenceError, WriteError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(f"eval results: {results['printed']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
