"""tools/memory.py refuses settings it cannot measure in one line, before starting any measurement
(a real measurement compiles a train step per variant: docs/benchmark.md "Memory" gives one), and with
--torch_ref puts the PyTorch process's peak (a stand-in's here; the official code's where an
interpreter with torch is given, see tests/dev/test_bench.py) next to ours with the ratio."""
import json
import os
import sys

import pytest

from conftest import run_script
from test_bench import OFFICIAL, TORCH_PYTHON, _torch_importable

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

SMALL = ("--device_target", "CPU", "--arch", "conformer_reduced_patch16", "--image_size", "32", "--num_classes", "10",
         "--batch_size", "4", "--micro_batches", "2", "--variants", "plain")


def test_memory_script_refuses_bad_settings_in_one_line(tmp_path):
    for args, message in ((["--batch_size", "10", "--micro_batches", "4"], "--batch_size 10 is not a multiple of"),
                          (["--batch", "10", "--micro_batches", "4"], "--batch_size 10 is not a multiple of"),
                          (["--steps", "0"], "--steps must be >= 1"),
                          (["--variants", "plain", "swap"], "invalid choice: 'swap'"),
                          (["--torch_ref", str(tmp_path)], f"--torch_ref {tmp_path}: no conformer.py")):
        result = run_script("tools/memory.py", "--device_target", "CPU", *args, timeout=120)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert not result.stdout


def _rows(result, out):
    assert result.returncode == 0, result.stderr
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    return rows["plain"], rows["PyTorch eager (official)"]


def test_torch_peak_sits_next_to_ours_with_the_ratio(tmp_path):
    (tmp_path / "conformer.py").write_text("")
    stand_in = tmp_path / "python-stand-in"  # passes the `-c "import torch"` probe, then reports a known peak
    stand_in.write_text(f"#!{sys.executable}\nimport json, sys\nif sys.argv[1] != '-c':\n"
                        "    spec = json.load(open(sys.argv[2]))\n"
                        "    assert spec['mode'] == 'memory' and spec['batch'] == 4 and spec['steps'] == 1, spec\n"
                        "    print(json.dumps({'peak_mib': 100.0, 'step_s': 0.5}))\n")
    stand_in.chmod(0o755)
    out = tmp_path / "memory.json"
    result = run_script("tools/memory.py", *SMALL, "--torch_ref", str(tmp_path), "--torch_python", str(stand_in),
                        "--json_out", str(out))
    ours, theirs = _rows(result, out)
    assert theirs["peak_mib"] == 100.0 and theirs["images_per_step"] == 4
    assert ours["ours_over_torch"] == round(ours["peak_mib"] / 100.0, 2) and "| ours / PyTorch |" in result.stdout
    # MindSpore's pool holds the step's tensors: part of the process, never all of it (libraries, graphs)
    assert 0 < ours["pool_mib"] < ours["peak_mib"] and "| pool MiB |" in result.stdout


def test_pool_peak_is_read_from_mindspores_exit_statistics():
    from tools.memory_probe import pool_peak_mib
    line = ("[MS_RUNTIME_PROF]The dynamic memory pool total allocated mem:4096M, min addr :0, max addr: 0, peak used "
            "mem:3566M, actual peak used mem:3579M, in used mem:0M, total used by event mem:0M")
    assert pool_peak_mib("other output\n" + line + "\n") == 3579
    assert pool_peak_mib("[MS_RUNTIME_PROF]Common mem pool info: Total allocated mem:1024M, peak used mem:24M") is None
    assert pool_peak_mib("") is None


@pytest.mark.skipif(not _torch_importable(TORCH_PYTHON), reason=f"{TORCH_PYTHON} cannot import torch")
def test_against_the_official_pytorch_training_process(tmp_path):
    assert os.path.isfile(os.path.join(OFFICIAL, "conformer.py")), f"no checkout of the official code at {OFFICIAL}"
    out = tmp_path / "memory.json"
    result = run_script("tools/memory.py", *SMALL, "--torch_ref", OFFICIAL, "--torch_python", TORCH_PYTHON,
                        "--json_out", str(out))
    ours, theirs = _rows(result, out)
    # a torch process holds at least the interpreter, torch and the model: well over 100 MiB
    assert theirs["peak_mib"] > 100 and theirs["step_s"] > 0 and theirs["torch"].startswith("2.")
    assert ours["ours_over_torch"] == round(ours["peak_mib"] / theirs["peak_mib"], 2)
