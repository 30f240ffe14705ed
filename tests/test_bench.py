"""scripts/bench.py --torch_ref and its PyTorch worker: refusals, the worker's torch-free part, ratios,
and (where an interpreter with torch is given) one real run against the official code.

The PyTorch run needs torch, a dev-only dependency: CONFORMER_TORCH_PYTHON names an interpreter that
has it (default: this one; the test skips when it cannot import torch) and CONFORMER_OFFICIAL a
checkout of github.com/pengzhiliang/Conformer (default: /tmp/official, as in the README).
"""
import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, run_script

BENCH = os.path.join(REPO, "scripts", "bench.py")
WORKER = os.path.join(REPO, "scripts", "bench_torch_worker.py")
TORCH_PYTHON = os.environ.get("CONFORMER_TORCH_PYTHON", sys.executable)
OFFICIAL = os.environ.get("CONFORMER_OFFICIAL", "/tmp/official")
SMALL = ("--device_target", "CPU", "--arch", "conformer_reduced_patch16", "--image_size", "32",
         "--num_classes", "10", "--repeats", "1")


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _one_line_error(result, prog):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    return lines[0]


def test_torch_ref_refusals_come_first_in_one_line(tmp_path):
    not_a_checkout = run_script(BENCH, *SMALL, "--torch_ref", str(tmp_path))
    assert f"--torch_ref {tmp_path}: no conformer.py" in _one_line_error(not_a_checkout, "bench.py")
    (tmp_path / "conformer.py").write_text("")
    no_torch = tmp_path / "python-without-torch"
    no_torch.write_text("#!/bin/sh\nexit 1\n")
    no_torch.chmod(0o755)
    for python, fragment in ((no_torch, "cannot import torch"), (tmp_path / "missing", "cannot run it")):
        result = run_script(BENCH, *SMALL, "--torch_ref", str(tmp_path), "--torch_python", str(python))
        assert f"--torch_python {python}" in _one_line_error(result, "bench.py") and fragment in result.stderr
        assert not result.stdout  # nothing was measured


def _spec(tmp_path, official, **changes):
    worker = _load(WORKER, "bench_torch_worker")
    spec = dict(official=str(official), hparams={"num_classes": 10}, image_size=32, batches=[1], train_batch=0,
                repeats=1, lr=1e-3, betas=[0.9, 0.999], eps=1e-8, weight_decay=0.05, seed=0, out_dir=str(tmp_path))
    spec.update(changes)
    path = tmp_path / "spec.json"
    worker.write_spec(str(path), **spec)
    return path


def test_worker_checks_spec_and_torch_before_any_work(tmp_path):
    spec = _spec(tmp_path, tmp_path)
    bad = subprocess.run([sys.executable, WORKER, str(spec)], capture_output=True, text=True)
    assert "has no conformer.py" in _one_line_error(bad, "bench_torch_worker.py")
    (tmp_path / "conformer.py").write_text("raise SystemExit('must not be imported')\n")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({k: v for k, v in json.loads(spec.read_text()).items() if k != "seed"}))
    missing = subprocess.run([sys.executable, WORKER, str(partial)], capture_output=True, text=True)
    assert "lacks seed" in _one_line_error(missing, "bench_torch_worker.py")
    # an interpreter where `import torch` fails (as without torch installed)
    hide_torch = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
                  "runpy.run_path(sys.argv[0], run_name='__main__')")
    no_torch = subprocess.run([sys.executable, "-c", hide_torch, WORKER, str(spec)], capture_output=True, text=True)
    assert "cannot import torch" in _one_line_error(no_torch, "bench_torch_worker.py")
    assert not (tmp_path / "official.pth").exists()


def test_ratios_pair_rows_of_the_same_batch():
    bench = _load(BENCH, "bench_script")
    rows = [{"what": "MindSpore GRAPH forward", "batch": 1, "img_per_s": 6.0},
            {"what": "MindSpore GRAPH forward", "batch": 16, "img_per_s": 30.0},
            {"what": "onnxruntime", "batch": 16, "img_per_s": 45.0},
            {"what": "MindSpore train step (adamw)", "batch": 16, "img_per_s": 4.0},
            {"what": "PyTorch eager forward", "batch": 1, "img_per_s": 12.0},
            {"what": "PyTorch eager forward", "batch": 16, "img_per_s": 20.0},
            {"what": "PyTorch eager forward", "batch": 8, "img_per_s": 20.0},
            {"what": "PyTorch eager train step (adamw)", "batch": 16, "img_per_s": 5.0},
            {"what": "onnxruntime (torch.onnx export)", "batch": 16, "img_per_s": 50.0},
            {"what": "onnxruntime (our ONNX, official weights)", "batch": 16, "img_per_s": 55.0}]
    bench.add_ratios(SimpleNamespace(arch_name="conformer_reduced_patch16", image_size=32, num_classes=10), rows)
    from src.variants import gmacs
    assert rows[0]["gflops"] == pytest.approx(6.0 * 2 * gmacs("conformer_reduced_patch16", 32, 10))
    assert rows[3]["gflops"] == pytest.approx(3 * 4.0 * 2 * gmacs("conformer_reduced_patch16", 32, 10))
    assert [r.get("ours_over_torch") for r in rows[4:]] == [0.5, 1.5, None, 0.8, 1.1, None]
    assert rows[2]["vs_mindspore"] == 1.5 and all("ours_over_torch" not in r for r in rows[:4])
    reference = np.array([[1.0, -2.0]])
    near = bench.numerics_row("a", reference + [[0.0, 1e-4]], reference)
    far = bench.numerics_row("b", reference + [[0.0, 3e-4]], reference)
    assert near["relative_diff"] <= bench.NUMERICS_TOLERANCE < far["relative_diff"] and "ABOVE" in far["note"]


def _torch_importable(python):
    try:
        return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _torch_importable(TORCH_PYTHON), reason=f"{TORCH_PYTHON} cannot import torch")
def test_against_the_official_pytorch_code(tmp_path):
    assert os.path.isfile(os.path.join(OFFICIAL, "conformer.py")), \
        f"set CONFORMER_OFFICIAL to a checkout of github.com/pengzhiliang/Conformer (tried {OFFICIAL})"
    out = tmp_path / "bench.json"
    result = run_script(BENCH, *SMALL, "--batches", "2", "--parts", "forward", "deploy", "--torch_ref", OFFICIAL,
                        "--torch_python", TORCH_PYTHON, "--json_out", str(out))
    assert result.returncode == 0, result.stderr
    rows = {r["what"]: r for r in json.loads(out.read_text())["results"]}
    theirs, ours = rows["PyTorch eager forward"], rows["MindSpore GRAPH forward"]
    assert theirs["batch"] == 2 and theirs["ours_over_torch"] == ours["img_per_s"] / theirs["img_per_s"]
    assert "PyTorch eager train step (adamw)" not in rows
    export, ours_onnx = rows["onnxruntime (torch.onnx export)"], rows["onnxruntime (our ONNX, official weights)"]
    assert export["ours_over_torch"] == ours_onnx["img_per_s"] / export["img_per_s"]

    numerics = [r for what, r in rows.items() if what.startswith("numerics:")]
    assert len(numerics) == 3 and all(r["relative_diff"] <= 1e-4 for r in numerics), numerics


def test_interleaved_medians_alternate_the_order_of_the_calls():
    bench = _load(BENCH, "bench_script")
    order = []
    medians = bench.interleaved_medians({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, 3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"] and set(medians) == {"a", "b"}


def test_plain_and_convs_parts_measure_the_model_before_its_cpu_formulation(tmp_path):
    out = tmp_path / "bench.json"
    result = run_script(BENCH, *SMALL, "--batches", "2", "--train_batch", "2", "--parts", "forward", "plain",
                        "convs", "--json_out", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["results"]
    by_name = {r["what"]: r for r in rows}
    plain, fast = by_name["MindSpore GRAPH forward, plain Conv2D"], by_name["MindSpore GRAPH forward"]
    assert plain["vs_mindspore"] == plain["img_per_s"] / fast["img_per_s"]
    convs = [r["what"] for r in rows if r["what"].startswith("conv ")]
    # the stem, the patch embedding, 3x3 (plain and strided) and the strided 1x1 residual convs, each once
    assert convs[0] == "conv 7x7/2 3->64 @32x32" and "conv 4x4/4 64->192 @8x8" in convs
    assert {c.split(" ")[1] for c in convs} == {"7x7/2", "4x4/4", "3x3/1", "3x3/2", "1x1/2"}
    assert len(convs) == len(set(convs))
