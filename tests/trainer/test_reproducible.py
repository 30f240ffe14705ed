"""Reproducible training, end to end: the same config and seed end with bit-identical training state
(weights, optimizer moments, EMA, BatchNorm statistics, loss scale) with several data worker threads
and the full augmentation recipe; so does a run stopped by a real SIGTERM and then killed -9, each
time resumed from the checkpoint it left.

One module fixture trains: A and B uninterrupted; C stopped by SIGTERM in epoch 1, resumed, killed
-9 in epoch 2 and resumed from its last periodic checkpoint."""
import glob
import os
import re
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_script
from datasets import write_digits_folder
from src.config import parse_args
from src.checkpoint import read_checkpoint

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

STEPS, EPOCHS = 6, 2
# the recipe's augmentations on (RandAugment, random erasing, Mixup/CutMix, flip, crop) and the YAML's
# num_parallel_workers (8, capped to the CPU count: 2 threads per map here); no drop path, whose
# in-graph generator a resumed process restarts (docs/training.md "Reproducibility")
ARGS = ["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"), "--device_target", "CPU",
        "--arch", "conformer_reduced_patch16", "--image_size", "32", "--num_classes", "10", "--drop_path", "0",
        "--repeated_aug", "0", "--warmup_length", "1", "--batch_size", "8", "--epochs", str(EPOCHS),
        "--train_num_samples", str(8 * STEPS), "--val_num_samples", "10", "--print_loss_every", "1",
        "--ckpt_save_every_step", "2", "--min_crop", "0.3"]
FINAL = f"-e{EPOCHS:04d}-s{EPOCHS * STEPS:08d}.ckpt"


def _outputs(root, name):
    return ["--ckpt_root_dir", str(root / name / "ckpt"), "--best_ckpt_root_dir", str(root / name / "best"),
            "--summary_root_dir", str(root / name / "summary")]


def _start(args):
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=dict(os.environ, GLOG_v="3"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_until(proc, prefix):
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    proc.wait()
    raise AssertionError("".join(seen) + proc.stderr.read())


def _final_state(root, name):
    (path,) = glob.glob(str(root / name / "ckpt" / f"*{FINAL}"))
    return read_checkpoint(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    data = write_digits_folder(root / "digits", train_per_class=5, val_per_class=1)
    base = [*ARGS, "--data_url", data]
    done = {}
    for name in ("A", "B"):
        result = run_script("train.py", *base, *_outputs(root, name))
        assert result.returncode == 0, result.stderr[-2000:]
        done[name] = result.stdout

    # C: a real SIGTERM once epoch 1's second step is out (it stops after the step in flight)
    args = [*base, *_outputs(root, "C")]
    proc = _start(args)
    _read_until(proc, f"epoch 1/{EPOCHS} step 2/{STEPS}")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    # the one line of the stop (the others: the warning that num_parallel_workers is capped)
    (stop_line,) = [line for line in err.strip().splitlines() if line.startswith("train.py")]
    command = re.fullmatch(r"train\.py: stopped by SIGTERM after epoch 1 step \d+/\d+ .*resume with: (.*)",
                           stop_line).group(1)

    # the printed resume command, killed -9 once epoch 2's third step is out: its newest checkpoint is
    # then a periodic one inside epoch 2 (after its step 2, or 4 if the kill landed late)
    proc = _start(shlex.split(command)[2:])
    _read_until(proc, f"epoch 2/{EPOCHS} step 3/{STEPS}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    newest = sorted(glob.glob(str(root / "C" / "ckpt" / "*.ckpt")))[-1]
    step = int(re.search(r"-e0002-s(\d{8})\.ckpt$", newest).group(1)) - STEPS
    assert step in (2, 4), newest
    resumed = run_script("train.py", *args, "--checkpoint", newest)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {newest}: epoch 2, step {step + 1}" in resumed.stdout
    done["C"] = resumed.stdout
    return root, done


def _assert_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    different = [name for name in a if not np.array_equal(a[name].asnumpy(), b[name].asnumpy())]
    assert not different, f"{len(different)} of {len(a)} entries differ, e.g. {different[:3]}"


def test_two_runs_with_the_same_seed_end_bit_identical(runs):
    root, stdout = runs
    state = _final_state(root, "A")
    assert {"adam_m", "adam_v", "ema"} <= {name.split(".")[0] for name in state}  # the whole training state
    _assert_identical(state, _final_state(root, "B"))
    fingerprint = re.compile(r"weights fingerprint (\w+)")
    assert fingerprint.search(stdout["A"]).group(1) == fingerprint.search(stdout["B"]).group(1)
    assert min(parse_args(ARGS).num_parallel_workers, os.cpu_count()) > 1  # several worker threads per map


def test_sigterm_and_kill_9_then_resume_end_as_the_uninterrupted_run(runs):
    root, _ = runs
    _assert_identical(_final_state(root, "A"), _final_state(root, "C"))
