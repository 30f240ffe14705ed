"""TensorBoard event files in summary_root_dir: per-step and per-epoch scalars, the input grid and the
run's hyper-parameters, through tensorboardX (an optional package: without it one line says so).
Every point sits at its global step, so a resumed run's purge marker replaces what an earlier process
logged from there on; why event files are not written through src/io.py: docs/development.md
"Conventions"."""
import os
import sys

from src.inference.heads import HEADS

INSTALL_HINT = "pip install tensorboardX"


def _hparam_value(value):
    """TensorBoard's hyper-parameters are numbers, strings or booleans: a list is shown as text."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


class TensorBoardLog:
    """Writes nothing when `enabled` is False (other ranks, `tensorboard: False`) or tensorboardX is
    missing (then one line on stderr says how to install it)."""

    def __init__(self, summary_dir: str, every: int, first_step: int, enabled: bool = True):
        """`first_step`: the global step of the first step this process trains (0 for a fresh run)."""
        self.every, self.writer = every, None
        if not enabled:
            return
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            print(f"train.py: TensorBoard event files are not written: tensorboardX is not installed "
                  f"({INSTALL_HINT}; or set tensorboard: False)", file=sys.stderr, flush=True)
            return
        # the pid: two starts within one second would otherwise open the same file name
        self.writer = SummaryWriter(logdir=summary_dir, purge_step=first_step, flush_secs=30,
                                    filename_suffix=f".{os.getpid()}")

    def hyper_parameters(self, config: dict, config_text: str) -> None:
        """The resolved configuration: in the HPARAMS tab (linked to the validation curves) and as text."""
        if self.writer is None:
            return
        from tensorboardX.summary import hparams
        metrics = {f"val/{head}_top1": 0.0 for head in HEADS}  # names only: the values are the curves
        for summary in hparams({k: _hparam_value(v) for k, v in config.items()}, metrics):
            self.writer._get_file_writer().add_summary(summary)  # pylint: disable=protected-access  (add_hparams would open a second run folder)
        self.writer.add_text("config", "\n".join("    " + line for line in config_text.splitlines()), 0)

    def step(self, global_step: int, loss: float, lr: float, loss_scale: float, skipped: int,
             grad_norm: float) -> None:
        """Every `every` global steps; `grad_norm` is left out when not finite (a skipped step)."""
        if self.writer is None or global_step % self.every:
            return
        values = {"train/loss": loss, "train/lr": lr, "train/loss_scale": loss_scale,
                  "train/skipped_steps": skipped}
        if grad_norm == grad_norm and abs(grad_norm) != float("inf"):
            values["train/grad_norm"] = grad_norm
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step)

    def epoch(self, global_step: int, results: dict, train_loss: float, images_per_second: float,
              epoch_seconds: float) -> None:
        """Validation results of each head (evaluate()'s dict), the epoch's mean training loss and its speed."""
        if self.writer is None:
            return
        for head in HEADS:
            self.writer.add_scalar(f"val/{head}_top1", results[head]["Top1-Acc"], global_step)
            self.writer.add_scalar(f"val/{head}_top5", results[head]["Top5-Acc"], global_step)
            self.writer.add_scalar(f"val/{head}_loss", results[head]["Loss"], global_step)
        self.writer.add_scalar("train/epoch_loss", train_loss, global_step)
        self.writer.add_scalar("speed/images_per_second", images_per_second, global_step)
        self.writer.add_scalar("speed/epoch_seconds", epoch_seconds, global_step)
        self.writer.flush()

    def input_grid(self, grid, global_step: int) -> None:
        """An HWC uint8 picture of a training batch."""
        if self.writer is not None:
            self.writer.add_image("train/inputs", grid, global_step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
