"""The training progress line: img/s and ETA time training steps only, not the graph compilation
of the first step nor the validation between epochs (a fake clock drives the logger as the trainer does);
data_time is the time the loop waited for each batch."""
import re
import time

import pytest

from src.trainer.logs import ProgressLogger, waited


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _run(capsys, epochs, steps_per_epoch, every, compile_s, step_s, validation_s, restart=True):
    """Drive the logger like Trainer.fit: steps of `step_s` (the run's first one `compile_s` longer),
    then `validation_s` of checkpointing and validation after each epoch."""
    clock = FakeClock()
    logger = ProgressLogger(epochs, steps_per_epoch, batch_size=8, every=every, clock=clock)
    for epoch in range(epochs):
        for step in range(1, steps_per_epoch + 1):
            clock.now += step_s + (compile_s if epoch == 0 and step == 1 else 0)
            logger.step(epoch, step, loss=1.0, lr=1e-3, skipped=0)
        clock.now += validation_s
        if restart:
            logger.restart()
    return re.findall(r"step (\d+)/\d+ .* img/s (\S+) ETA (\S+)", capsys.readouterr().out)


def test_rate_and_eta_leave_out_compilation_and_validation(capsys):
    lines = _run(capsys, epochs=3, steps_per_epoch=10, every=5, compile_s=300.0, step_s=0.5, validation_s=120.0)
    assert len(lines) == 6
    for _, rate, _ in lines:  # 8 images per 0.5 s step, on every line: the first and after each validation
        assert float(rate) == pytest.approx(16.0)
    # 25 steps remain after epoch 1 step 5: 12.5 s
    assert lines[0] == ("5", "16.0", "0:00:12")
    assert lines[2] == ("5", "16.0", "0:00:07")


def test_without_restart_validation_would_count(capsys):
    """The check above can fail: without the restart the validation time lands in the next line."""
    lines = _run(capsys, epochs=2, steps_per_epoch=10, every=5, compile_s=0.0, step_s=0.5, validation_s=120.0,
                 restart=False)
    assert float(lines[2][1]) < 1.0


def test_a_line_at_the_first_step_has_no_rate_yet(capsys):
    lines = _run(capsys, epochs=1, steps_per_epoch=3, every=1, compile_s=300.0, step_s=2.0, validation_s=0.0)
    assert lines[0] == ("1", "-", "-")
    assert lines[1] == ("2", "4.0", "0:00:02")


def test_data_time_is_the_mean_wait_of_the_steps_since_the_previous_line(capsys):
    clock = FakeClock()
    logger = ProgressLogger(1, 4, batch_size=8, every=2, clock=clock)
    for step, wait in zip(range(1, 5), (0.5, 0.1, 0.2, 0.4)):
        clock.now += 1.0
        logger.step(0, step, loss=1.0, lr=1e-3, skipped=0, data_time=wait)
    assert re.findall(r"data_time (\S+)s", capsys.readouterr().out) == ["0.300", "0.300"]


def _consume(batches, step_s):
    """The trainer's loop over `batches`: each body (the train step) takes `step_s`; -> the waits."""
    waits = []
    for _, wait in waited(batches):
        waits.append(wait)
        time.sleep(step_s)
    return waits


def _pipeline(items, produce_s):
    for item in range(items):
        time.sleep(produce_s)
        yield item


def test_waited_measures_how_long_the_loop_waited_for_each_batch():
    # a pipeline 0.1 s per batch behind a 0.02 s step: each batch is waited for ~0.1 s (sleeps can only
    # overrun, so the lower bound holds on a busy machine); a pipeline with batches ready: ~0
    slow = _consume(_pipeline(4, 0.1), 0.02)
    fast = _consume(list(range(4)), 0.02)
    assert len(slow) == len(fast) == 4
    assert min(slow) >= 0.1
    assert max(fast) < 0.01 < min(slow)
