"""Convert an official or mmpretrain PyTorch Conformer checkpoint to a MindSpore checkpoint.

    python convert.py --src Conformer_tiny_patch16.pth --arch conformer_tiny_patch16 --output tiny.ckpt
    python convert.py --src Conformer_tiny_patch16.pth --arch conformer_tiny_patch16 --output tiny.safetensors

An output ending in .safetensors is written in that format (MindSpore's layout, with its CRC32),
any other as a MindSpore .ckpt.  Every script also loads the .pth itself, converted in memory.
Torch is not needed: the .pth file is read by a restricted unpickler (src/convert/torch_checkpoint.py).
"""
import argparse
import sys

from src.checkpoint import save_checkpoint_atomic
from src.config import VOCABULARY
from src.conformer import ARCH_NAMES, create_model, param_count_line
from src.convert.state_dict import ConversionError, convert_state_dict, head_classes, unwrap_state_dict
from src.convert.torch_checkpoint import load_torch_checkpoint
from src.runtime.console import run_main
from src.runtime.targets import DEVICE_TARGETS
import mindspore as ms  # after src: src/__init__.py sets MindSpore's log level first


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", "--checkpoint", dest="src", required=True,
                        help=f"{VOCABULARY['--checkpoint']}: the PyTorch checkpoint (.pth) to convert, in official "
                             "or mmpretrain format")
    parser.add_argument("--arch", required=True, choices=ARCH_NAMES, metavar="ARCH",
                        help=f"target variant: {', '.join(ARCH_NAMES)}")
    parser.add_argument("--output", "--out", dest="output", required=True,
                        help=f"{VOCABULARY['--output']}: the MindSpore checkpoint (.ckpt, or .safetensors)")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes of the heads (default: read from the checkpoint)")
    parser.add_argument("--device_target", default="CPU", choices=DEVICE_TARGETS,
                        help="device that builds the target network (conversion itself is host-side)")
    args = parser.parse_args(argv)
    state_dict, source = unwrap_state_dict(load_torch_checkpoint(args.src))
    num_classes = args.num_classes or head_classes(state_dict) or 1000
    ms.set_device(args.device_target)
    net = create_model(args.arch, num_classes=num_classes)
    print(param_count_line(net, args.arch), flush=True)
    expected = {p.name: p.shape for p in net.get_parameters()}
    try:
        params = convert_state_dict(state_dict, expected)
    except ConversionError as e:  # the tables' messages name a parameter: add the file
        raise ConversionError(f"{args.src}: {e}") from None
    # the origin lets load_weights warn when these weights meet the ModelZoo approximations
    origin = "mmpretrain" if source == "mmpretrain" else "official"
    save_checkpoint_atomic([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], args.output,
                           append_dict={"converted_from": origin})
    print(f"converted {len(params)} parameters ({source} format, {num_classes} classes) "
          f"from {args.src} to {args.output} for {args.arch}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "convert.py"))
