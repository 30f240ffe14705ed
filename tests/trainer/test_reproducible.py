"""Reproducible training, end to end: the same config and seed end with bit-identical training state
(weights, optimizer moments, EMA, BatchNorm statistics, loss scale) with several data worker processes
or threads and the full augmentation recipe, even when the second run is stopped by a real SIGTERM
and then killed -9, each time resumed from the checkpoint it left; and so does the same command with
`--checkpoint auto` re-run after each of two SIGTERMs, whose TensorBoard curves then hold each step
once.  The interrupted run also shows what each interruption leaves: a SIGTERM stops after the step
in flight with one line, a complete checkpoint and the command that resumes at the next step; kill -9
leaves only complete checkpoints, and resuming from the newest continues at the next step.

One module fixture trains: A uninterrupted (worker processes); C (worker threads) stopped by SIGTERM
in epoch 1, resumed, killed -9 in epoch 2 and resumed from its last periodic checkpoint, so that its
final state equal to A's shows both that threads and processes give the same batches and that the
interruptions change nothing; D, the same command line three times (`--checkpoint auto`), stopped by SIGTERM in epoch 1
and in epoch 2, its newest checkpoint damaged before the last start."""
import csv
import glob
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import mindspore as ms
import pytest

from conftest import REPO, run_script, script_env
from datasets import write_digits_folder
from event_files import read_events
from src.config import load_yaml, parse_args
from src.trainer.lr_schedule import build_lr_schedule
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


# the interrupted runs C and D differ from each other only in what decides no graph (outputs, worker
# threads, resumes, what they log): their starts share one compile cache; A compiles its own
CACHE = "interrupted"


def _start(args):
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO,
                            env=script_env(["train.py", *args], compile_cache=CACHE),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_until(proc, prefix):
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            return seen
    proc.wait()
    raise AssertionError("".join(seen) + proc.stderr.read())


def _sigterm_after(args, line_prefix):
    """Start train.py, SIGTERM it once `line_prefix` is printed; -> its stdout, stderr (status 143)."""
    proc = _start(args)
    seen = _read_until(proc, line_prefix)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    return "".join(seen) + out, err


def _final_state(root, name):
    (path,) = glob.glob(str(root / name / "ckpt" / f"*{FINAL}"))
    return read_checkpoint(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    data = write_digits_folder(root / "digits", train_per_class=5, val_per_class=1)
    base = [*ARGS, "--data_url", data]
    done = {}
    result = run_script("train.py", *base, *_outputs(root, "A"), "--data_workers_mode", "process")
    assert result.returncode == 0, result.stderr[-2000:]
    done["A"] = result.stdout

    # C, with worker threads: a real SIGTERM once epoch 1's second step is out (it stops after the step in flight)
    args = [*base, *_outputs(root, "C"), "--data_workers_mode", "thread"]
    proc = _start(args)
    seen = _read_until(proc, f"epoch 1/{EPOCHS} step 2/{STEPS}")
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    out, err = proc.communicate(timeout=300)
    done["C_stop"] = {"returncode": proc.returncode, "seconds": time.time() - sent, "stdout": "".join(seen) + out,
                      "stderr": err, "tmp_files": [n for n in os.listdir(root / "C" / "ckpt") if n.startswith(".tmp-")]}
    assert proc.returncode == 143, err[-2000:]
    (stop_line,) = [line for line in err.strip().splitlines() if line.startswith("train.py")]
    command = re.fullmatch(r"train\.py: stopped by SIGTERM after epoch 1 step \d+/\d+ .*resume with: (.*)",
                           stop_line).group(1)
    done["C_stop"]["command"] = command
    done["C_stop"]["state"] = read_checkpoint(re.search(r"; checkpoint (\S+);", stop_line).group(1))

    # the printed resume command, killed -9 once epoch 2's third step is out: its newest checkpoint is
    # then a periodic one inside epoch 2 (after its step 2, or 4 if the kill landed late)
    proc = _start(shlex.split(command)[2:])
    done["C_resumed"] = "".join(_read_until(proc, f"epoch 2/{EPOCHS} step 3/{STEPS}"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    complete = sorted(glob.glob(str(root / "C" / "ckpt" / "*.ckpt")))
    # every checkpoint on disk loads; a killed save leaves only a hidden temp file
    done["C_killed"] = {path: "global_step" in ms.load_checkpoint(path) for path in complete}
    newest = complete[-1]
    step = int(re.search(r"-e0002-s(\d{8})\.ckpt$", newest).group(1)) - STEPS
    assert step in (2, 4), newest
    resumed = run_script("train.py", *args, "--resume", newest, compile_cache=CACHE)  # --checkpoint's other name
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {newest}: epoch 2, step {step + 1}" in resumed.stdout
    done["C"] = resumed.stdout
    done["C_kill_step"] = step

    # D: one command line, started three times; TensorBoard every step, with the input grids
    auto = [*base, *_outputs(root, "D"), "--checkpoint", "auto", "--summary_loss_collect_freq", "1",
            "--collect_input_data", "True"]
    out, _ = _sigterm_after(auto, f"epoch 1/{EPOCHS} step 2/{STEPS}")
    assert "--checkpoint auto: no intact checkpoint" in out and "starting fresh" in out
    out, _ = _sigterm_after(auto, f"epoch 2/{EPOCHS} step 3/{STEPS}")
    assert re.search(r"resumed from \S+-e0001-s0000000[23]\.ckpt: epoch 1, step [34]", out), out
    # the newest checkpoint damaged (a flipped byte): the third start reports it and takes the one before
    checkpoints = sorted(glob.glob(str(root / "D" / "ckpt" / "*.ckpt")))
    newest, before = checkpoints[-1], checkpoints[-2]
    os.chmod(newest, 0o644)
    with open(newest, "r+b") as f:
        f.seek(os.path.getsize(newest) // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    final = run_script("train.py", *auto, compile_cache=CACHE)
    assert final.returncode == 0, final.stderr[-2000:]
    (line,) = [line for line in final.stderr.splitlines() if "--checkpoint auto" in line]
    assert line.startswith(f"train.py: --checkpoint auto: {newest}: ") and line.endswith("; trying the one before it")
    assert f"resumed from {before}:" in final.stdout
    done["D"] = final.stdout
    return root, done


def _assert_identical(a: dict, b: dict):
    assert sorted(a) == sorted(b)
    different = [name for name in a if not (a[name] == b[name] if isinstance(a[name], str)  # the run's settings
                                            else np.array_equal(a[name].asnumpy(), b[name].asnumpy()))]
    assert not different, f"{len(different)} of {len(a)} entries differ, e.g. {different[:3]}"


def test_a_second_run_with_worker_threads_stopped_by_sigterm_and_kill_9_ends_bit_identical_to_one_with_processes(
        runs):
    """One comparison for two behaviours: worker threads and worker processes give the same training, and a
    run stopped by SIGTERM and kill -9 and resumed ends where the uninterrupted one does."""
    root, stdout = runs
    state = _final_state(root, "A")
    assert {"adam_m", "adam_v", "ema"} <= {name.split(".")[0] for name in state}  # the whole training state
    # C trained with threads from start to end: its resume commands carry the mode
    assert "--data_workers_mode thread" in stdout["C_stop"]["command"], stdout["C_stop"]["command"]
    _assert_identical(state, _final_state(root, "C"))
    fingerprint = re.compile(r"weights fingerprint (\w+)")
    assert fingerprint.search(stdout["A"]).group(1) == fingerprint.search(stdout["C"]).group(1)
    assert min(parse_args(ARGS).num_parallel_workers, os.cpu_count()) > 1  # several data workers


def _first_progress(stdout):
    return re.search(rf"^epoch (\d)/{EPOCHS} step (\d+)/{STEPS} loss [\d.]+ lr ([\d.e+-]+)", stdout, re.M)


def test_sigterm_stops_after_the_step_in_flight_with_a_checkpoint_that_resumes(runs):
    root, stdout = runs
    stop = stdout["C_stop"]
    assert stop["returncode"] == 143 and stop["seconds"] < 30, stop["stderr"][-2000:]
    lines = stop["stderr"].strip().splitlines()
    others = [line for line in lines if not line.startswith("train.py")]
    assert len(lines) - len(others) == 1 and all("num_parallel_workers" in line for line in others), lines
    (line,) = set(lines) - set(others)
    found = re.fullmatch(rf"train\.py: stopped by SIGTERM after epoch 1 step (\d+)/{STEPS} \(global step \1\); "
                         r"checkpoint (\S+); resume with: (python train\.py .* --checkpoint \2)", line)
    assert found, line
    step, path = int(found.group(1)), found.group(2)
    assert 2 <= step < STEPS and "SIGTERM: stopping after the step in flight" in stop["stdout"]
    progress = re.findall(rf"^epoch 1/{EPOCHS} step (\d+)/{STEPS}", stop["stdout"], re.M)
    assert progress[-1] == str(step)  # the checkpoint is the last step trained: none lost, none done twice
    state = stop["state"]  # complete: its CRC holds
    assert int(state["global_step"].asnumpy()[0]) == step
    assert (int(state["epoch"].asnumpy()), int(state["step_in_epoch"].asnumpy())) == (0, step)
    # the full training state (restore() in the resumed run refuses a checkpoint missing any of it)
    assert {"adam_m", "adam_v", "ema"} <= {name.split(".")[0] for name in state} and "scale_sense" in state
    assert not stop["tmp_files"]
    # the printed command, as the user would paste it, continues at the next step with its learning rate
    assert f"resumed from {path}: epoch 1, step {step + 1} (global step {step})" in stdout["C_resumed"]
    first = _first_progress(stdout["C_resumed"])
    assert first.group(1, 2) == ("1", str(step + 1))
    assert first.group(3) == f"{build_lr_schedule(parse_args(ARGS), steps_per_epoch=STEPS)[step]:.3e}"


def test_kill_9_leaves_complete_checkpoints_and_resume_continues_at_the_next_step(runs):
    root, stdout = runs
    killed = stdout["C_killed"]
    assert killed and all(killed.values())
    step = stdout["C_kill_step"]
    assert f"epoch 2, step {step + 1} (global step {STEPS + step})" in stdout["C"]
    first = _first_progress(stdout["C"])
    assert first.group(1, 2) == ("2", str(step + 1))
    schedule = build_lr_schedule(parse_args(ARGS), steps_per_epoch=STEPS)
    assert first.group(3) == f"{schedule[STEPS + step]:.3e}"  # the update it continues with, as uninterrupted
    assert not [n for n in os.listdir(root / "C" / "ckpt") if n.startswith(".tmp-")]
    assert [int(r["global_step"]) for r in _csv_rows(root / "C" / "summary" / "metrics.csv")] == [STEPS, 2 * STEPS]


def test_the_same_command_with_checkpoint_auto_resumes_after_two_sigterms_to_the_same_weights(runs):
    _, stdout = runs
    fingerprint = re.compile(r"weights fingerprint (\w+)")
    assert fingerprint.search(stdout["A"]).group(1) == fingerprint.search(stdout["D"]).group(1)


def _csv_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tensorboard_curves_of_the_resumed_run_match_the_csvs_with_each_step_once(runs):
    root, _ = runs
    summary = root / "D" / "summary"
    events = read_events(str(summary))
    scalars = events["scalars"]
    assert len(glob.glob(str(summary / "events.out.tfevents.*"))) == 3  # one file per start
    assert events["purges"][1:] and all(step > 0 for step in events["purges"][1:])  # the resumed starts purge
    losses = {int(r["global_step"]): (float(r["loss"]), float(r["lr"])) for r in _csv_rows(summary / "loss.csv")}
    assert sorted(losses) == list(range(1, EPOCHS * STEPS + 1))
    for tag in ("train/loss", "train/lr", "train/loss_scale", "train/skipped_steps", "train/grad_norm"):
        assert sorted(scalars[tag]) == sorted(losses), tag  # every step once: the purged ones replaced
    for step, (loss, lr) in losses.items():
        assert scalars["train/loss"][step] == pytest.approx(loss, abs=2e-6)
        assert scalars["train/lr"][step] == pytest.approx(lr, rel=1e-5)
    assert set(scalars["train/loss_scale"].values()) == {1024.0} and set(scalars["train/skipped_steps"].values()) == {0}
    assert all(np.isfinite(v) and v > 0 for v in scalars["train/grad_norm"].values())
    metrics = _csv_rows(summary / "metrics.csv")
    assert [int(r["global_step"]) for r in metrics] == [STEPS * e for e in range(1, EPOCHS + 1)]
    for row in metrics:
        step = int(row["global_step"])
        for head in ("summed", "conv", "transformer"):
            for k in ("top1", "top5"):
                assert scalars[f"val/{head}_{k}"][step] == pytest.approx(float(row[f"{head}_{k}"]), abs=1e-6)
        assert scalars["val/summed_loss"][step] == pytest.approx(float(row["val_loss"]), rel=1e-6)
        assert scalars["train/epoch_loss"][step] == pytest.approx(float(row["train_loss"]), rel=1e-6)
        assert scalars["speed/images_per_second"][step] > 0 and scalars["speed/epoch_seconds"][step] > 0
        assert scalars["val/conv_loss"][step] > 0 and scalars["val/transformer_loss"][step] > 0
    assert events["images"]["train/inputs"]  # collect_input_data
    assert "_hparams_/experiment" in events["tags"] and "config/text_summary" in events["tags"]


def test_the_run_record_repeats_the_run_and_says_what_produced_it(runs):
    root, _ = runs
    summary = root / "D" / "summary"
    recorded = load_yaml(str(summary / "config.yaml"))  # a config file --config accepts
    replayed = parse_args(["--config", str(summary / "config.yaml")], script="train.py")
    original = parse_args(ARGS, script="train.py")
    assert recorded["arch"] == "conformer_reduced_patch16" and recorded["image_size"] == 32
    assert recorded["summary_loss_collect_freq"] == 1 and recorded["ckpt_root_dir"] == str(root / "D" / "ckpt")
    for key in ("epochs", "batch_size", "base_lr", "warmup_length", "seed", "min_crop", "num_classes"):
        assert getattr(replayed, key) == getattr(original, key), key
    with open(summary / "run.json") as f:
        starts = json.load(f)["starts"]
    assert len(starts) == 3
    assert starts[0]["command"][-4:] == ["--summary_loss_collect_freq", "1", "--collect_input_data", "True"]
    assert starts[0]["resumed_from"] == "" and starts[2]["resumed_from"].endswith(".ckpt")
    assert {s["device_target"] for s in starts} == {"CPU"} and {s["device_num"] for s in starts} == {1}
    assert starts[0]["versions"]["mindspore"] and starts[0]["versions"]["python"]
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", starts[0]["revision"])  # this test runs in a git checkout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", starts[0]["start_time"])


def test_every_checkpoint_carries_the_settings_to_use_it_alone(runs):
    root, _ = runs
    paths = glob.glob(str(root / "D" / "ckpt" / "*.ckpt")) + glob.glob(str(root / "D" / "best" / "*.ckpt"))
    assert any("-best-" in p for p in paths)
    for path in paths:
        if path.endswith("-s00000012.ckpt") or "-best-" in path:
            settings = json.loads(read_checkpoint(path)["run_settings"])
            assert settings["arch"] == "conformer_reduced_patch16" and settings["num_classes"] == 10
            assert settings["image_size"] == 32 and settings["class_names"] == [str(i) for i in range(10)]
            assert settings["disable_approximate_gelu"] is True and settings["amp_level"] == "O0"
