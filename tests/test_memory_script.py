"""scripts/memory.py refuses settings it cannot measure in one line, before starting any measurement
(a real measurement compiles a train step per variant: README "Memory levers" gives one)."""
from conftest import run_script


def test_memory_script_refuses_bad_settings_in_one_line():
    for args, message in ((["--batch_size", "10", "--micro_batches", "4"], "--batch_size 10 is not a multiple of"),
                          (["--batch", "10", "--micro_batches", "4"], "--batch_size 10 is not a multiple of"),
                          (["--steps", "0"], "--steps must be >= 1"),
                          (["--variants", "plain", "swap"], "invalid choice: 'swap'")):
        result = run_script("scripts/memory.py", "--device_target", "CPU", *args, timeout=120)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
