"""Evaluate a checkpoint on data_url/val_dir: loss, top-1 and top-5 of the summed heads, then each head.

    python eval.py --config src/configs/conformer_tiny.yaml --checkpoint conformer_tiny.ckpt --data_url /data/imagenet/
                   [--results_file R.json] [--use_ema] [--tta flip] [--amp_level O2]

val_dir holds class folders, or (with --val_labels CSV) a flat folder of images; --results_file also
writes per-class top-1 and the confusion matrix (docs/inference.md "Results files").  The checkpoint
may be a .ckpt, a .safetensors or an official / mmpretrain .pth (converted in memory).
"""
import sys

from src.checkpoint import load_weights
from src.checkpoint_settings import apply_checkpoint_settings
from src.config import add_checkpoint_arg, add_results_file_arg, parse_args, start_weights
from src.conformer import create_model_from_config, param_count_line
from src.data.batch_finish import NormalizedInput
from src.data.imagenet import create_dataset
from src.inference.evaluate import evaluate
from src.inference.metrics import format_eval_results
from src.inference.network import inference_network
from src.inference.results_file import results_record, write_results
from src.runtime.console import run_main
from src.runtime.device import init_context


def _script_args(parser):
    add_checkpoint_arg(parser, "its weights are evaluated (default: --pretrained)")
    add_results_file_arg(parser)
    parser.add_argument("--use_ema", action="store_true",
                        help="evaluate the EMA weights (ema.*) of a training checkpoint instead of its raw weights")


def main() -> int:
    cfg = parse_args(script="eval.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    checkpoint = apply_checkpoint_settings(cfg, start_weights(cfg), "eval.py")
    init_context(cfg)
    net = create_model_from_config(cfg)
    load_weights(net, start_weights(cfg), use_ema=cfg.use_ema, checkpoint=checkpoint)
    print(param_count_line(net, cfg.arch), flush=True)
    data = create_dataset(cfg, "val")
    results = evaluate(NormalizedInput(inference_network(net, cfg.amp_level)), data, cfg.tta)  # uint8 batches
    if cfg.results_file:
        write_results(cfg.results_file, results_record(results, data.class_names))
    print(format_eval_results(results["summed"]))
    print(f"conv head: {format_eval_results(results['conv'])}")
    print(f"transformer head: {format_eval_results(results['transformer'])}")
    print(f"({results['num_images']} images)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "eval.py"))
