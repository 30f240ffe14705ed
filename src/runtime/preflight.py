"""Launcher preflight: the configured device exists in this MindSpore and there are enough of them.
Run by scripts/run_*_train_gpu.sh before any worker starts, for train.py's device (`--device_target`
among TRAIN ARGS, else the YAML's, else the default); exit status 0, or 2 with one `NAME: error: ...`
line instead of one traceback per worker.

    python -m src.runtime.preflight --script NAME --config CFG [--num_devices N] [--device_ids 0,1] [TRAIN ARGS...]
"""
import argparse
import os
import sys

from src.config import OPTIONS, ConfigError, load_yaml
from src.runtime.targets import DEVICE_TARGETS


def configured_device(config: str, train_args: list) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--device_target")
    given, _ = parser.parse_known_args(train_args)
    return given.device_target or load_yaml(config).get("device_target") or OPTIONS["device_target"].default


def check(device: str, num_devices: int, device_ids: list) -> None:
    """Raise ValueError (one line) when `device` is missing or has fewer devices than asked for."""
    # MindSpore warns about every backend it cannot load; this process's output is its one line
    os.environ["GLOG_v"] = "3"
    import mindspore as ms
    contexts = {name: getattr(ms.device_context, name.lower()) for name in DEVICE_TARGETS}
    if device not in contexts:
        raise ValueError(f"device_target {device}: must be one of {', '.join(contexts)}")
    if not contexts[device].is_available():
        usable = ", ".join(name for name, context in contexts.items() if context.is_available())
        raise ValueError(f"device_target {device}: this MindSpore ({ms.__version__}) has no usable {device} support "
                         f"here (it runs on: {usable}); install its {device} build (see the README's Install) "
                         "or pass --extra --device_target CPU")
    if device == "CPU":  # processes share the host: any number of "devices" fits
        return
    present = contexts[device].device_count()
    wanted = max([num_devices, *(i + 1 for i in device_ids)])
    if wanted > present:
        which = f"--device_ids {','.join(map(str, device_ids))}" if device_ids else f"--num_devices {num_devices}"
        raise ValueError(f"{which}: this machine has {present} {device} device(s) (0..{present - 1})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.runtime.preflight", description=__doc__.splitlines()[0])
    parser.add_argument("--script", default="preflight")
    parser.add_argument("--config", required=True)
    parser.add_argument("--num_devices", type=int, default=1)
    parser.add_argument("--device_ids", default="")
    args, train_args = parser.parse_known_args(argv)
    try:
        ids = [int(i) for i in args.device_ids.split(",") if i.strip()]
    except ValueError:
        print(f"{args.script}: error: --device_ids must be integers separated by commas, got {args.device_ids}",
              file=sys.stderr)
        return 2
    try:
        check(configured_device(args.config, train_args), args.num_devices, ids)
    except (ValueError, ConfigError) as e:
        print(f"{args.script}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
