"""Training curves: loss.csv holds the loss and lr of every recorded step, metrics.png plots them."""
import csv
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, run_script
from datasets import write_digits_folder
from src.trainer.logs import LossLog, MetricsLog

LR_GREEN = (44, 160, 44)  # matplotlib's tab:green, the lr panel's line and nothing else in the figure


def _row(epoch, step):
    return {"epoch": epoch, "global_step": step, "train_loss": 2.0 / epoch, "val_loss": 2.2 / epoch,
            "summed_top1": 0.2 * epoch, "conv_top1": 0.1 * epoch, "transformer_top1": 0.15 * epoch}


def _lr_panel_pixels(png) -> int:
    """Pixels of the lr line's colour in the figure's middle third."""
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    middle = pixels[:, pixels.shape[1] // 3:2 * pixels.shape[1] // 3]
    return int((np.abs(middle - LR_GREEN).sum(axis=2) < 30).sum())


def test_loss_log_records_lr_replaces_resumed_steps_and_reads_old_files(tmp_path):
    (tmp_path / "loss.csv").write_text("global_step,epoch,loss\n1,1,2.5\n2,1,2.4\n3,1,2.3\n")  # before the lr column
    log = LossLog(str(tmp_path), every=1)
    log.record(3, 0, 2.25, 1e-3)  # resumed after step 2: step 3 again
    log.record(4, 1, 2.0, 5e-4)
    log.flush()
    assert (tmp_path / "loss.csv").read_text().splitlines() == [
        "global_step,epoch,loss,lr", "1,1,2.5", "2,1,2.4", "3,1,2.250000,1.000000e-03", "4,2,2.000000,5.000000e-04"]
    points = log.points()
    assert [p[:3] for p in points] == [(1, 1, 2.5), (2, 1, 2.4), (3, 1, 2.25), (4, 2, 2.0)]
    assert np.isnan(points[0][3]) and points[3][3] == 5e-4


def test_metrics_png_draws_the_per_step_lr_only_when_there_are_steps(tmp_path):
    steps = [(s, 1 + s // 5, 2.0 - 0.1 * s, 1e-3 * (1 - s / 10)) for s in range(1, 11)]
    with_steps, without = MetricsLog(str(tmp_path / "a")), MetricsLog(str(tmp_path / "b"))
    for epoch in (1, 2):
        with_steps.append(_row(epoch, 5 * epoch), steps[:5 * epoch])
        without.append(_row(epoch, 5 * epoch))
    assert _lr_panel_pixels(tmp_path / "a" / "metrics.png") > 100
    assert _lr_panel_pixels(tmp_path / "b" / "metrics.png") == 0


def test_metrics_log_continues_a_file_with_the_old_head_columns(tmp_path):
    (tmp_path / "metrics.csv").write_text("epoch,global_step,train_loss,val_loss,sum_top1,conv_top1,trans_top1\n"
                                          "1,5,2.0,2.2,0.2,0.1,0.15\n")
    MetricsLog(str(tmp_path)).append(_row(2, 10))
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(_row(2, 10))
    assert [(r["epoch"], r["summed_top1"], r["transformer_top1"]) for r in rows] == [("1", "0.2", "0.15"),
                                                                                     ("2", "0.4", "0.3")]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("digits"), train_per_class=2, val_per_class=1, size=40)


@pytest.mark.e2e
def test_a_two_epoch_run_at_40_px_logs_every_step_with_its_lr(tmp_path, digits):
    """40 px is not a multiple of 32: training runs on the padded stem map too."""
    summary = tmp_path / "summary"
    result = run_script("train.py", "--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"),
                        "--device_target", "CPU", "--arch", "conformer_reduced_patch16", "--image_size", "40",
                        "--num_classes", "10", "--num_parallel_workers", "1", "--drop_path", "0",
                        "--warmup_length", "1", "--repeated_aug", "0", "--auto_augment", "none", "--mixup", "0",
                        "--cutmix", "0", "--re_prob", "0", "--data_url", digits, "--batch_size", "5",
                        "--epochs", "2", "--print_loss_every", "1", "--summary_loss_collect_freq", "1",
                        "--with_ema", "False", "--ckpt_root_dir", str(tmp_path / "ckpt"),
                        "--best_ckpt_root_dir", str(tmp_path / "best"), "--summary_root_dir", str(summary))
    assert result.returncode == 0, result.stderr[-2000:]
    with open(summary / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    printed = re.findall(r"^epoch (\d)/2 step \d/4 loss ([\d.]+) lr ([\d.e+-]+)", result.stdout, re.M)
    assert [int(r["global_step"]) for r in rows] == list(range(1, 9))
    assert [r["epoch"] for r in rows] == [p[0] for p in printed] == ["1"] * 4 + ["2"] * 4
    for row, (_, loss, lr) in zip(rows, printed):
        assert float(row["loss"]) == pytest.approx(float(loss), abs=1e-4)
        assert float(row["lr"]) == pytest.approx(float(lr), rel=1e-3)
    assert len({r["lr"] for r in rows}) == 8  # warm-up then cosine: a new lr every step
    png = summary / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _lr_panel_pixels(png) > 100
