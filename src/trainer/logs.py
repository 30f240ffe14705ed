"""Training-time logs: progress lines, the metrics and loss CSVs, curves and the input grid.
Every file is written atomically (temp file + rename, src/io.py), so killing a run
at any moment leaves only complete files, and a failed write (full disk, unwritable folder)
raises one WriteError line that names the file and what is still intact.  Only rank 0 creates
these objects' files (`enabled=False` on other ranks).
"""
import csv
import io
import os
import time

import numpy as np
from PIL import Image

from src.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from src.inference.heads import HEADS
from src.io import write_atomic


_OLD_COLUMNS = {f"{old}_{k}": f"{new}_{k}" for old, new in (("sum", "summed"), ("trans", "transformer"))
                for k in ("top1", "top5")}


def _format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def waited(batches, clock=time.perf_counter):
    """(item, seconds the consumer waited for it) for each item of `batches`: from the moment the loop
    asked for the next item (its previous body had ended) until the item came. timm's and mmpretrain's
    `data_time`: near 0 while the input pipeline keeps ahead of the step, the step's shortfall when not."""
    iterator = iter(batches)
    while True:
        start = clock()
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item, clock() - start


class ProgressLogger:
    """`epoch E/N step S/M loss L lr X img/s R ETA h:mm:ss data_time Ds` every `every` steps.

    img/s and ETA time training steps only: the clock starts after the run's first step (which
    compiles the graph) and restarts at `restart()`, which the trainer calls after each validation.
    A line printed before any step was timed shows `img/s - ETA -`. data_time: the mean seconds a
    step waited for its batch (see `waited`) over the steps since the previous line.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, batch_size: int, every: int, enabled: bool = True,
                 clock=time.perf_counter):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.batch_size, self.every, self.enabled = batch_size, every, enabled
        self._clock = clock
        self._since, self._steps_since = None, 0  # None until the first (compiling) step is over
        self._data_time, self._data_steps = 0.0, 0

    def restart(self) -> None:
        """Time from now on: whatever ran since the last step (validation, ...) is not a training step."""
        self._since, self._steps_since = self._clock(), 0
        self._data_time, self._data_steps = 0.0, 0

    def step(self, epoch: int, step: int, loss: float, lr: float, skipped: int, data_time: float = 0.0) -> None:
        """`epoch` 0-based, `step` 1-based within the epoch; `data_time`: seconds this step waited for data."""
        if self._since is None:
            self.restart()
        else:
            self._steps_since += 1
        self._data_time += data_time
        self._data_steps += 1
        if not self.enabled or (step % self.every and step != self.steps_per_epoch):
            return
        remaining = (self.epochs - epoch - 1) * self.steps_per_epoch + self.steps_per_epoch - step
        if self._steps_since:
            per_step = max(self._clock() - self._since, 1e-9) / self._steps_since
            rate = f"img/s {self.batch_size / per_step:.1f} ETA {_format_duration(remaining * per_step)}"
        else:
            rate = "img/s - ETA -"
        print(f"epoch {epoch + 1}/{self.epochs} step {step}/{self.steps_per_epoch} loss {loss:.4f} "
              f"lr {lr:.3e} {rate} data_time {self._data_time / self._data_steps:.3f}s"
              + (f" skipped_steps {skipped}" if skipped else ""), flush=True)
        self.restart()


class MetricsLog:
    """Per-epoch metrics appended to summary_dir/metrics.csv; curves in metrics.png with matplotlib:
    the training loss and learning rate per recorded step (loss.csv's rows, given to `append`) and
    the validation results per epoch."""

    def __init__(self, summary_dir: str, enabled: bool = True):
        self.csv_path = os.path.join(summary_dir, "metrics.csv")
        self.png_path = os.path.join(summary_dir, "metrics.png")
        self.enabled = enabled
        self.rows = self._read() if enabled else []

    def _read(self) -> list:
        if not os.path.isfile(self.csv_path):
            return []
        with open(self.csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
        # a file of a run from before the head names were those of src/inference/heads.py is continued
        return [{_OLD_COLUMNS.get(key, key): value for key, value in row.items()} for row in rows]

    def append(self, row: dict, steps: list = ()) -> None:
        """Add an epoch's row; `steps`: LossLog.points() of the run so far, for the curves."""
        if not self.enabled:
            return
        # a resumed run replaces the rows of epochs it trains again
        self.rows = [r for r in self.rows if int(r["epoch"]) < int(row["epoch"])] + [row]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomic(self.csv_path, out.getvalue())
        self._plot(steps)

    def _plot(self, steps: list) -> None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # curves are optional; the CSVs have every number
            return
        epochs = [int(r["epoch"]) for r in self.rows]
        epoch_ends = [int(r["global_step"]) for r in self.rows]
        fig, (ax_loss, ax_lr, ax_acc) = plt.subplots(1, 3, figsize=(15, 4))
        if steps:
            ax_loss.plot([p[0] for p in steps], [p[2] for p in steps], lw=0.8, label="train loss (step)")
            ax_lr.plot([p[0] for p in steps], [p[3] for p in steps], color="tab:green")
        # the epoch means at each epoch's last step: points on the steps' axis
        ax_loss.plot(epoch_ends, [float(r["train_loss"]) for r in self.rows], "o-", label="train loss (epoch mean)")
        ax_loss.plot(epoch_ends, [float(r["val_loss"]) for r in self.rows], "s-", label="val loss")
        for head in HEADS:
            ax_acc.plot(epochs, [float(r[f"{head}_top1"]) for r in self.rows], "o-", label=f"top-1 {head}")
        ax_acc.xaxis.get_major_locator().set_params(integer=True)
        for ax, xlabel, title in ((ax_loss, "step", "loss"), (ax_lr, "step", "learning rate"),
                                  (ax_acc, "epoch", "validation accuracy")):
            ax.set_xlabel(xlabel)
            ax.set_title(title)
        ax_loss.legend()
        ax_acc.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=80)
        plt.close(fig)
        write_atomic(self.png_path, buffer.getvalue(), mode="wb")


class LossLog:
    """The training loss and learning rate every `every` steps, in summary_dir/loss.csv
    (global_step,epoch,loss,lr; rewritten at each flush)."""

    HEADER = "global_step,epoch,loss,lr"

    def __init__(self, summary_dir: str, every: int, enabled: bool = True):
        self.path = os.path.join(summary_dir, "loss.csv")
        self.every, self.enabled = every, enabled
        self.lines = []
        if enabled and os.path.isfile(self.path):
            with open(self.path) as f:
                self.lines = f.read().splitlines()[1:]

    def record(self, global_step: int, epoch: int, loss: float, lr: float) -> None:
        if self.enabled and global_step % self.every == 0:
            # a run resumed from an earlier checkpoint records those steps again: the new values replace them
            while self.lines and int(self.lines[-1].split(",")[0]) >= global_step:
                self.lines.pop()
            self.lines.append(f"{global_step},{epoch + 1},{loss:.6f},{lr:.6e}")

    def points(self) -> list:
        """[(global_step, epoch, loss, lr)]; lr is nan in rows written before loss.csv had it."""
        rows = [line.split(",") for line in self.lines]
        return [(int(r[0]), int(r[1]), float(r[2]), float(r[3]) if len(r) > 3 else float("nan")) for r in rows]

    def flush(self) -> None:
        if self.enabled:
            write_atomic(self.path, "\n".join([self.HEADER] + self.lines) + "\n")


def input_grid(images) -> np.ndarray:
    """A batch of eval-normalised NCHW images as one HWC uint8 picture, a near-square grid."""
    pixels = images.transpose(0, 2, 3, 1) * IMAGENET_STD + IMAGENET_MEAN
    pixels = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    columns = int(np.ceil(np.sqrt(len(pixels))))
    rows = -(-len(pixels) // columns)
    h, w = pixels.shape[1:3]
    grid = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, image in enumerate(pixels):
        grid[i // columns * h:(i // columns + 1) * h, i % columns * w:(i % columns + 1) * w] = image
    return grid


def save_input_grid(grid: np.ndarray, summary_dir: str, epoch: int) -> None:
    """The first training batch of an epoch (`input_grid`) as summary_dir/inputs_e<epoch>.png
    (augmentations visible)."""
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    write_atomic(os.path.join(summary_dir, f"inputs_e{epoch + 1:04d}.png"), buffer.getvalue(), mode="wb")
