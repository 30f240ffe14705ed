"""Train Conformer: config -> data -> model -> train step -> epochs with validation and checkpoints.

    python train.py --config src/configs/conformer_tiny.yaml --data_url /data/imagenet/ [--resume CKPT]

Multi-device runs are started by scripts/run_distribute_train_gpu.sh (msrun).
"""
import sys

from src.config import parse_args
from src.data.imagenet import DatasetError
from src.tools.atomic import WriteError
from src.tools.checkpoint import CheckpointError
from src.tools.device import DeviceError
from src.trainer.trainer import Trainer, TrainingError


def _script_args(parser):
    parser.add_argument("--resume", "--checkpoint", dest="resume", default="",
                        help="continue training from this training checkpoint (weights, optimizer, EMA, "
                             "loss scale, position)")


def main() -> int:
    cfg = parse_args(description=__doc__.splitlines()[0], add_script_args=_script_args)
    try:
        Trainer(cfg).fit()
    except (DeviceError, DatasetError, CheckpointError, TrainingError, WriteError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
