"""Training as users run it: learning on real data, loss scale + clipping + EMA together, AMP, a second
SIGTERM, and one-line refusals of bad input (SIGTERM, kill -9 and resume: in test_reproducible.py, whose
interrupted run shows both; msrun data parallel: in tests/runtime/test_launcher.py)."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import yaml
import mindspore as ms
from mindspore import nn

from conftest import REPO, run_script, script_env
from datasets import EVAL_SMALL, NO_AUGMENT, SMALL, write_digits_folder
from src.checkpoint import read_checkpoint
from src.conformer import create_model
from src.trainer.checkpoint_keeper import CheckpointKeeper
from src.trainer.ema import EMA
from src.trainer.train_one_step import NetWithLoss, TrainOneStep

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)



@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_folder(tmp_path_factory.mktemp("digits"), train_per_class=30, val_per_class=10)


def _outputs(tmp_path, name):
    return ["--ckpt_root_dir", str(tmp_path / f"{name}_ckpt"), "--best_ckpt_root_dir", str(tmp_path / f"{name}_best"),
            "--summary_root_dir", str(tmp_path / f"{name}_summary")]


def _metrics(summary_dir):
    import csv
    with open(os.path.join(summary_dir, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_training_learns_real_digits(tmp_path, digits):
    result = run_script("train.py", *SMALL, "--data_url", digits, "--batch_size", "30", "--epochs", "5",
                        "--base_lr", "0.002", "--auto_augment", "none", "--mixup", "0", "--cutmix", "0",
                        "--re_prob", "0", "--min_crop", "0.6", "--print_loss_every", "5", "--ema_decay", "0.8",
                        *_outputs(tmp_path, "run"))
    assert result.returncode == 0, result.stderr[-2000:]
    printed = re.search(r"^resolved configuration .*\n((?:  .*\n)+)", result.stdout, re.M)
    assert printed, "train.py prints its resolved configuration at start"
    assert yaml.safe_load(textwrap.dedent(printed.group(1))) == \
        yaml.safe_load((tmp_path / "run_summary" / "config.yaml").read_text())
    rows = _metrics(tmp_path / "run_summary")
    assert len(rows) == 5
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"]) - 0.2
    assert float(rows[-1]["summed_top1"]) >= 0.4  # 10 classes: chance is 0.1
    assert re.search(r"epoch 5 EMA summed: eval results: \{'Loss': [\d.]+, 'Top1-Acc': [\d.]+, 'Top5-Acc': [\d.]+\}",
                     result.stdout)
    assert re.search(r"epoch 1/5 step 5/10 loss [\d.]+ lr [\d.e+-]+ img/s [\d.]+ ETA \d+:\d\d:\d\d "
                     r"data_time [\d.]+s", result.stdout)
    for row in rows:  # the epoch's mean wait for data: the mean of its two lines' (5 steps each)
        lines = re.findall(rf"^epoch {row['epoch']}/5 step \d+/10 .* data_time ([\d.]+)s", result.stdout, re.M)
        assert len(lines) == 2
        assert float(row["data_time"]) == pytest.approx(sum(map(float, lines)) / 2, abs=1e-3)
    assert os.path.isfile(tmp_path / "run_summary" / "loss.csv")
    assert (tmp_path / "run_summary" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "run_best" / "best.json") as f:
        best = json.load(f)
    assert sorted(best.values()) == sorted(float(r["summed_top1"]) for r in rows)[-len(best):]
    # the best checkpoint holds only model weights, and evaluates to the recorded top-1
    evaluated = run_script("eval.py", *EVAL_SMALL, "--data_url", digits, "--pretrained", max(best, key=best.get))
    assert evaluated.returncode == 0, evaluated.stderr
    top1 = float(re.search(r"^eval results: .*'Top1-Acc': ([\d.]+)", evaluated.stdout, re.M).group(1))
    assert top1 == pytest.approx(max(float(r["summed_top1"]) for r in rows), abs=1e-6)


def test_loss_scale_clip_and_ema_combine_and_overflow_is_skipped_and_amp_o1_trains():
    """At amp_level O1 (O2 and O3 below): one compiled step checks the loss scale, clipping, EMA and AMP."""
    from src.trainer.loss import create_loss
    from src.inference.amp import mixed_precision
    net = mixed_precision(create_model("conformer_reduced_patch16", num_classes=4), "O1")
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
    ema = EMA(net.get_parameters(), decay=0.5)
    step = TrainOneStep(NetWithLoss(net, create_loss()), optimizer, loss_scale=1024.0,
                        dynamic_loss_scale=True, clip_grad_norm=0.1, ema=ema)
    step.set_train(True)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    targets = ms.Tensor(np.eye(4, dtype=np.float32))
    weight = net.trainable_params()[1]
    shadow = [s for s in ema.shadows if s.name == f"ema.{weight.name}"][0]
    before = weight.asnumpy().copy()
    loss, applied, scale = step(x, targets)
    after = weight.asnumpy().copy()
    assert bool(applied.asnumpy()) and float(scale.asnumpy()) == 1024.0
    assert np.isfinite(float(loss.asnumpy())) and not np.array_equal(after, before), "O1 trains"
    # EMA: shadow = 0.5 * initial + 0.5 * updated weight
    np.testing.assert_allclose(shadow.asnumpy(), 0.5 * before + 0.5 * after, rtol=1e-6, atol=1e-7)
    # clipping to global norm 0.1 bounds the first momentum step: |update| <= lr * 0.1
    assert np.sqrt(((after - before) ** 2).sum()) <= 0.01 * 0.1 + 1e-7

    poisoned = ms.Tensor(np.full((4, 3, 32, 32), np.inf, np.float32))
    _, applied, scale = step(poisoned, targets)
    assert not bool(applied.asnumpy())
    assert float(scale.asnumpy()) == 512.0  # dynamic scale halves on overflow
    assert int(step.skipped_steps.asnumpy()) == 1
    np.testing.assert_array_equal(weight.asnumpy(), after)  # the step was not applied
    np.testing.assert_allclose(shadow.asnumpy(), 0.5 * before + 0.5 * after, rtol=1e-6, atol=1e-7)


def _one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_stops_with_one_line(tmp_path, digits):
    base = [*SMALL, "--epochs", "1", "--batch_size", "10", *_outputs(tmp_path, "bad")]
    _one_line_error(run_script("train.py", *base, "--data_url", str(tmp_path / "nowhere")), "nowhere")
    _one_line_error(run_script("train.py", *base, "--data_url", digits, "--base_lr", "-1"), "base_lr")
    _one_line_error(run_script("train.py", *base, "--data_url", digits, "--arch", "conformer_huge"), "arch")
    other_arch = tmp_path / "other.ckpt"
    ms.save_checkpoint(create_model("conformer_small_patch32", num_classes=10), str(other_arch))
    _one_line_error(run_script("train.py", *base, "--data_url", digits, "--pretrained", str(other_arch)),
                    "other.ckpt", "cls_token")
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"\x00" * 100)
    _one_line_error(run_script("train.py", *base, "--data_url", digits, "--resume", str(corrupt)), "corrupt.ckpt")


def test_a_training_batch_without_a_readable_image_stops_with_one_line(tmp_path, digits):
    data = tmp_path / "unreadable"
    for label in range(10):  # one damaged file per class: the only batch of 10 has no readable image
        os.makedirs(data / "train" / str(label))
        (data / "train" / str(label) / "0.png").write_bytes(b"not a png")
    os.symlink(os.path.join(digits, "val"), data / "val")
    result = run_script("train.py", *SMALL, "--epochs", "1", "--batch_size", "10", "--data_url", str(data),
                        *_outputs(tmp_path, "unreadable"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]  # after one warning per file
    assert re.fullmatch(r"train\.py: error: .*/train/\d/0\.png: not an image file PIL can identify; none of the 10 "
                        r"images of its training batch is readable", last), last


def test_a_new_run_never_overwrites_existing_checkpoints(tmp_path, digits):
    ckpt_dir = tmp_path / "bad_ckpt"
    ckpt_dir.mkdir()
    existing = ckpt_dir / "conformer_reduced_patch16_0-e0001-s00000004.ckpt"
    existing.write_bytes(b"a good checkpoint of an earlier run")
    result = run_script("train.py", *SMALL, "--epochs", "1", "--batch_size", "10", "--data_url", digits,
                        *_outputs(tmp_path, "bad"))
    _one_line_error(result, "already holds checkpoints", "--resume")
    assert existing.read_bytes() == b"a good checkpoint of an earlier run"


def test_a_diverged_run_stops_after_max_nonfinite_steps_naming_the_last_good_checkpoint(tmp_path, digits):
    # a learning rate of 1e8: the first step's update makes the weights huge, every later loss non-finite
    result = run_script("train.py", *SMALL, *NO_AUGMENT, "--epochs", "2", "--batch_size", "10",
                        "--train_num_samples", "100", "--val_num_samples", "10", "--data_url", digits,
                        "--base_lr", "1e8", "--ckpt_save_every_step", "1", "--max_nonfinite_steps", "3",
                        "--summary_loss_collect_freq", "1", *_outputs(tmp_path, "nan"))
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    # the global step counts applied optimizer steps: the skipped ones do not advance it
    match = re.fullmatch(r"train\.py: error: training diverged: 3 steps in a row had non-finite gradients, up to "
                         r"epoch 1 step (\d+)/10 \(global step (\d+)\); the last good checkpoint is (\S+) "
                         r"\(max_nonfinite_steps 3\)", last)
    assert match, last
    stop, applied, good = int(match.group(1)), int(match.group(2)), match.group(3)
    assert applied == stop - 3 >= 1
    assert os.path.basename(good) == f"conformer_reduced_patch16_0-e0001-s{applied:08d}.ckpt"
    # a checkpoint after every applied step, none of the non-finite steps; all intact
    saved = sorted(glob.glob(str(tmp_path / "nan_ckpt" / "*.ckpt")))
    assert saved[-1] == good and len(saved) == applied
    for path in saved:
        assert read_checkpoint(path)["epoch"].asnumpy() == 0
    # the losses recorded up to the stop are on disk (a skipped step's replaces its global step's): the last one
    # is the diverged loss (huge, or not finite)
    with open(tmp_path / "nan_summary" / "loss.csv") as f:
        losses = [float(line.split(",")[2]) for line in f.read().splitlines()[1:]]
    assert len(losses) == applied and not abs(losses[-1]) < 1e6


def test_checkpoint_keeper_keeps_the_newest_and_the_best(tmp_path):
    net = create_model("conformer_reduced_patch16", num_classes=2)
    keeper = CheckpointKeeper(str(tmp_path / "c"), str(tmp_path / "b"), "p", keep=2, best_num=2)
    for step in (1, 2, 3):
        keeper.save_current(net, epoch=0, step_in_epoch=step, global_step=step, extra={})
    assert sorted(os.listdir(tmp_path / "c")) == ["p-e0001-s00000002.ckpt", "p-e0001-s00000003.ckpt"]
    weights = [{"name": p.name, "data": p.value()} for p in net.get_parameters()]
    for epoch, top1 in enumerate((0.3, 0.5, 0.4, 0.1)):
        keeper.offer_best(weights, top1, epoch)
    kept = sorted(os.listdir(tmp_path / "b"))
    assert kept == ["best.json", "p-best-e0002-top1-0.5000.ckpt", "p-best-e0003-top1-0.4000.ckpt"]
    # a restarted keeper knows the earlier best ones and their scores
    again = CheckpointKeeper(str(tmp_path / "c"), str(tmp_path / "b"), "p", keep=2, best_num=2)
    assert again.has_checkpoints() and not again.offer_best(weights, 0.35, 5)


@pytest.mark.parametrize("level", ["O2", "O3"])
def test_amp_levels_train_on_cpu(level):
    from src.trainer.loss import create_loss
    from src.inference.amp import mixed_precision
    net = mixed_precision(create_model("conformer_reduced_patch16", num_classes=4), level)
    optimizer = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
    step = TrainOneStep(NetWithLoss(net, create_loss()), optimizer, loss_scale=1024.0, dynamic_loss_scale=True,
                        clip_grad_norm=1.0)
    step.set_train(True)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    weight = net.trainable_params()[1]
    before = weight.asnumpy().copy()
    losses = [float(step(x, ms.Tensor(np.eye(4, dtype=np.float32)))[0].asnumpy()) for _ in range(2)]
    assert all(np.isfinite(losses))
    assert not np.array_equal(weight.asnumpy(), before)


def _train_until(args, first_line_prefix):
    """Start train.py and return (process, stdout lines so far) once a line starting with the prefix is out."""
    proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=script_env(["train.py", *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(first_line_prefix):
            return proc, seen
    proc.wait()
    raise AssertionError("".join(seen) + proc.stderr.read())


def test_finetuning_at_another_resolution_trains_and_a_second_signal_stops_it_at_once_without_a_checkpoint(
        tmp_path, digits):
    """One run, two behaviours. Fine-tuning: the checkpoint comes from the 32-px runs' setup with 4 classes;
    its heads are re-initialised for 10, and it trains at 64 px with nothing resampled (no position
    embedding), as fine-tuning a 224 checkpoint at 384. Then two SIGTERMs: the second stops at once."""
    pretrained = tmp_path / "four_classes.ckpt"
    ms.save_checkpoint(create_model("conformer_reduced_patch16", num_classes=4), str(pretrained))
    args = [*SMALL, "--data_url", digits, "--batch_size", "30", "--epochs", "1", "--print_loss_every", "1",
            *NO_AUGMENT, "--pretrained", str(pretrained), "--image_size", "64", *_outputs(tmp_path, "twice")]
    proc, seen = _train_until(args, "epoch 1/1 step 1/10")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.02)  # two signals sent at once may reach the process as one; a step takes longer than this
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert f"pretrained {pretrained}: heads re-initialised for 10 classes\n" in seen, "fine-tuning: " + "".join(seen)
    assert re.match(r"epoch 1/1 step 1/10 loss [\d.]+ ", seen[-1]), "fine-tuning at 64 px trains a step: " + seen[-1]
    assert proc.returncode == 143, "second signal: " + err[-2000:]
    assert err.strip().splitlines() == ["train.py: SIGTERM again: stopped at once, without a checkpoint of the "
                                        "step in flight"], "second signal"
    assert not glob.glob(str(tmp_path / "twice_ckpt" / "*.ckpt")), "second signal: no checkpoint"
