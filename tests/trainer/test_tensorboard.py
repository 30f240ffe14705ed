"""The TensorBoard log: a resumed process's points replace an earlier one's from its first step on, only
every `every` steps are written, and without tensorboardX one line says how to install it."""
import sys
import time

import numpy as np

from event_files import read_events
from src.trainer.tensorboard import TensorBoardLog

RESULTS = {head: {"Top1-Acc": 0.5, "Top5-Acc": 0.9, "Loss": 1.25} for head in ("summed", "conv", "transformer")}


def _steps(log, steps, loss):
    for step in steps:
        log.step(step, loss + step, 1e-3, 1024.0, 0, 2.0 if step % 3 else float("nan"))


def test_a_resumed_process_replaces_the_points_from_its_first_step(tmp_path):
    first = TensorBoardLog(str(tmp_path), every=1, first_step=0)
    _steps(first, range(1, 8), loss=0.0)  # killed after step 7; its newest checkpoint was at step 4
    first.epoch(5, RESULTS, 1.0, 100.0, 2.0)
    first.input_grid(np.zeros((8, 8, 3), np.uint8), 1)
    first.close()
    time.sleep(1.1)  # an event file is named after its start second (and the pid, the same here)
    resumed = TensorBoardLog(str(tmp_path), every=2, first_step=5)
    _steps(resumed, range(5, 11), loss=100.0)
    resumed.close()
    events = read_events(str(tmp_path))
    loss = events["scalars"]["train/loss"]
    # steps 1-4 of the first process; from step 5 on, the resumed one's every second step
    assert loss == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0, 6: 106.0, 8: 108.0, 10: 110.0}
    assert events["purges"] == [0, 5] and events["duplicates"] == []
    assert events["scalars"]["val/summed_top1"] == {}  # written at step 5: purged
    assert events["images"]["train/inputs"] == [1]
    # the gradient norm of a skipped step (not finite) is left out
    assert sorted(events["scalars"]["train/grad_norm"]) == [1, 2, 4, 8, 10]


def test_without_tensorboardx_one_line_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # import fails as when it is not installed
    log = TensorBoardLog(str(tmp_path), every=1, first_step=0)
    _steps(log, range(1, 3), loss=0.0)
    log.epoch(2, RESULTS, 1.0, 100.0, 2.0)
    log.close()
    assert capsys.readouterr().err.splitlines() == [
        "train.py: TensorBoard event files are not written: tensorboardX is not installed (pip install "
        "tensorboardX; or set tensorboard: False)"]
    assert list(tmp_path.iterdir()) == []


def test_disabled_writes_nothing_and_says_nothing(tmp_path, capsys):
    log = TensorBoardLog(str(tmp_path), every=1, first_step=0, enabled=False)
    _steps(log, range(1, 3), loss=0.0)
    log.close()
    assert capsys.readouterr().err == "" and list(tmp_path.iterdir()) == []
