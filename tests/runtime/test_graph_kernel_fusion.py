"""graph_kernel_fusion (MindSpore's graph kernel fusion, AKG, on CPU): train.py trains the same model
to the same losses with and without it, the fused kernels are compiled into the cache folder, and the
settings it depends on are made before MindSpore is imported."""
import csv
import os
import subprocess
import sys

import pytest

from conftest import REPO, run_script
from datasets import NO_AUGMENT, SMALL, write_digits_folder
from src.config import MEMORY, early_value, parse_args
from src.runtime import device
from src.runtime import openmp


def _step_losses(summary_dir) -> list:
    with open(os.path.join(summary_dir, "loss.csv")) as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


@pytest.mark.e2e
def test_train_py_with_fusion_matches_the_unfused_run_and_keeps_kernels_in_the_cache(tmp_path, monkeypatch):
    digits = write_digits_folder(tmp_path / "digits", train_per_class=8, val_per_class=2)
    cache = tmp_path / "cache"
    monkeypatch.setenv("MS_COMPILER_CACHE_PATH", str(cache))
    losses = {}
    for fused in ("True", "False"):
        run_dir = tmp_path / f"fused_{fused}"
        run_dir.mkdir()
        result = run_script(os.path.join(REPO, "train.py"), *SMALL, *NO_AUGMENT, "--data_url", digits,
                            "--batch_size", "16", "--epochs", "1", "--summary_loss_collect_freq", "1",
                            "--graph_kernel_fusion", fused, "--ckpt_root_dir", str(run_dir / "ckpt"),
                            "--best_ckpt_root_dir", str(run_dir / "best"), "--summary_root_dir", str(run_dir / "summary"),
                            cwd=str(run_dir))
        assert result.returncode == 0, result.stderr[-2000:]
        losses[fused] = _step_losses(run_dir / "summary")
    assert len(losses["True"]) == len(losses["False"]) == 5
    # fusion only reorders float operations: the first loss (a forward pass) and the second (after one
    # backward pass and update) agree; later steps drift apart as any two float orders do at this lr
    assert losses["True"][:2] == pytest.approx(losses["False"][:2], rel=1e-5)
    assert losses["True"] == pytest.approx(losses["False"], rel=2e-2)
    kernels = [name for name in os.listdir(cache / "akg_kernel_meta") if name.endswith(".so")]
    assert any(name.startswith("Fused_") for name in kernels), kernels[:5]
    assert not os.path.exists(tmp_path / "fused_True" / "akg_kernel_meta")  # not MindSpore's default, the cwd


def test_openmp_threads_default_to_one_a_users_setting_is_kept_and_torch_gets_neither_of_ours(monkeypatch):
    monkeypatch.setattr(openmp, "_SET_HERE", [])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert openmp.limit_openmp_threads() and os.environ["OMP_NUM_THREADS"] == "1"
    assert os.environ["OPENBLAS_NUM_THREADS"] == str(os.cpu_count())  # NumPy keeps every core
    others = openmp.environment_for_others()  # the PyTorch worker keeps its own threads
    assert "OMP_NUM_THREADS" not in others and "OPENBLAS_NUM_THREADS" not in others
    monkeypatch.setattr(openmp, "_SET_HERE", [])
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert not openmp.limit_openmp_threads() and os.environ["OMP_NUM_THREADS"] == "4"
    assert openmp.environment_for_others()["OMP_NUM_THREADS"] == "4"


PROBE = """
import os, runpy, sys
seen = []
class Watch:  # records OMP_NUM_THREADS when mindspore is first imported, and stops the script there
    def find_spec(self, name, path=None, target=None):
        if name == "mindspore":
            seen.append(os.environ.get("OMP_NUM_THREADS"))
            raise SystemExit(0)
        return None
sys.meta_path.insert(0, Watch())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit:
    pass
print("OMP_NUM_THREADS at import of mindspore:", seen)
"""


@pytest.mark.parametrize("script", ["train.py", "tools/bench.py", "tools/memory.py"])
def test_the_scripts_reading_fusion_set_openmp_threads_before_mindspore_is_imported(script):
    """libgomp reads OMP_NUM_THREADS when MindSpore loads it, at import: too late after. A run
    without fusion keeps libgomp's default."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    for args, seen in ((["--graph_kernel_fusion", "True"], "['1']"), ([], "[None]")):
        result = subprocess.run([sys.executable, "-c", PROBE, script, *args], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=300)
        assert f"OMP_NUM_THREADS at import of mindspore: {seen}" in result.stdout, \
            result.stdout[-500:] + result.stderr[-2000:]


def test_the_tools_read_fusion_before_parsing_as_parse_args_will(tmp_path):
    fused = tmp_path / "fused.yaml"
    fused.write_text("batch_size: 8\ngraph_kernel_fusion: True\n")
    inherits = tmp_path / "inherits.yaml"
    inherits.write_text("base: fused.yaml\nseed: 1\n")
    plain = os.path.join(REPO, "src", "configs", "conformer_tiny.yaml")
    cases = [["--config", str(fused)], [f"--config={fused}"], ["--config", str(inherits), "--steps", "2"],
             ["--config", plain], [], ["--config", plain, "--graph_kernel_fusion", "true"],
             ["--config", str(fused), "--graph_kernel_fusion=False"]]
    for argv in cases:
        assert early_value("graph_kernel_fusion", argv) is parse_args(argv, script=MEMORY,
                                                                      add_script_args=_steps).graph_kernel_fusion
    assert [early_value("graph_kernel_fusion", argv) for argv in cases] == [True, True, True, False, False, True, False]
    # a bad file or value: the default here, parse_args' one-line error later
    assert early_value("graph_kernel_fusion", ["--config", str(tmp_path / "missing.yaml")]) is False
    assert early_value("graph_kernel_fusion", ["--config", str(fused), "--graph_kernel_fusion", "maybe"]) is False


def _steps(parser):
    parser.add_argument("--steps", type=int, default=1)


def test_fusion_without_its_compiler_dependency_is_one_line(monkeypatch):
    monkeypatch.setattr(device.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(device.DeviceError, match="graph_kernel_fusion needs the Python package 'decorator'"):
        device.set_graph_kernel_fusion(True)
    device.set_graph_kernel_fusion(False)  # off: nothing is checked or set


def test_the_cache_folder_is_the_users_unless_mindspores_variable_names_one(monkeypatch, tmp_path):
    monkeypatch.delenv("MS_COMPILER_CACHE_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert device.graph_kernel_cache() == os.path.join(str(tmp_path), "conformer-ms", "graph_kernels")
    monkeypatch.setenv("MS_COMPILER_CACHE_PATH", str(tmp_path / "mine"))
    assert device.graph_kernel_cache() == str(tmp_path / "mine")
