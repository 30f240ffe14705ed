"""Build the configured Conformer, check its size against the official one, count its MACs, time a forward pass.

    python summary.py --config src/configs/conformer_tiny.yaml --device_target CPU [--batch_size 8] [--checkpoint CKPT]
"""
import sys
import time

import numpy as np

from src.checkpoint import load_weights
from src.config import add_checkpoint_arg, parse_args, start_weights
from src.conformer import create_model_from_config, gmacs_line, param_count_line
from src.runtime.console import run_main
from src.runtime.device import init_context
import mindspore as ms  # after src: src/__init__.py sets MindSpore's log level first


def _script_args(parser):
    add_checkpoint_arg(parser, "its weights are loaded (default: --pretrained; none: random weights, which time "
                               "the same)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes after the compiling one")


def main() -> int:
    cfg = parse_args(script="summary.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    init_context(cfg)
    net = create_model_from_config(cfg)
    if start_weights(cfg):
        load_weights(net, start_weights(cfg))
    net.set_train(False)
    print(param_count_line(net, cfg.arch))
    print(f"{gmacs_line(cfg.arch, cfg.image_size, cfg.num_classes)} (forward, one image)")
    x = ms.Tensor(np.random.default_rng(cfg.seed).standard_normal(
        (cfg.batch_size, 3, cfg.image_size, cfg.image_size)).astype(np.float32))
    start = time.perf_counter()
    conv_logits, trans_logits = net(x)
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(cfg.repeats):
        start = time.perf_counter()
        conv_logits, trans_logits = net(x)
        conv_logits.asnumpy()
        times.append(time.perf_counter() - start)
    best = min(times) if times else compile_s
    mode = "PYNATIVE" if cfg.pynative_mode else "GRAPH"
    print(f"input {tuple(x.shape)} -> conv head {tuple(conv_logits.shape)}, transformer head "
          f"{tuple(trans_logits.shape)}")
    print(f"{mode} forward on {cfg.device_target}: first call (compile) {compile_s:.1f} s, "
          f"best of {len(times)}: {best * 1000:.0f} ms = {cfg.batch_size / best:.2f} img/s")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "summary.py"))
