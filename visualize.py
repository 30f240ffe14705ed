"""Show where a Conformer looks: input | CNN class activation map | transformer attention rollout, as one PNG.

    python visualize.py IMAGE --checkpoint CKPT --arch ARCH [--output PNG] [--image_size 224] [--any_yaml_key V]

The CNN panel is the class activation map of the predicted class from the conv head's
weights; the transformer panel is the class token's attention rollout (src/visualize.py).
"""
import sys

from src.checkpoint_settings import apply_checkpoint_settings
from src.config import add_checkpoint_arg, add_output_arg, parse_args, start_weights
from src.runtime.console import run_main
from src.visualize import run

PROG = "visualize.py"


def _script_args(parser):
    parser.add_argument("image", help="image file (any size and aspect; fed whole, not cropped)")
    add_checkpoint_arg(parser, "its weights are explained (default: --pretrained)")
    add_output_arg(parser, "the PNG (default: IMAGE's name + .conformer.png in the current directory)")


def main() -> int:
    cfg = parse_args(script="visualize.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    print(run(cfg, apply_checkpoint_settings(cfg, start_weights(cfg), PROG)))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, PROG))
