"""tools/bench.py --torch_ref and its PyTorch worker: refusals, the worker's torch-free part, the
interleaved timing and its command protocol (with a stand-in worker), ratios, and (where an
interpreter with torch is given) one real run against the official code.

The PyTorch run needs torch, a dev-only dependency: CONFORMER_TORCH_PYTHON names an interpreter that
has it (default: this one; the test skips when it cannot import torch) and CONFORMER_OFFICIAL a
checkout of github.com/pengzhiliang/Conformer (default: /tmp/official, as in docs/benchmark.md).
"""
import importlib.util
import json
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO, run_script

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

BENCH = os.path.join(REPO, "tools", "bench.py")
WORKER = os.path.join(REPO, "tools", "bench_torch_worker.py")
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


def _spec(tmp_path, official, name="spec.json", **changes):
    worker = _load(WORKER, "bench_torch_worker")
    spec = dict(mode="serve", official=str(official), hparams={"num_classes": 10}, image_size=32, lr=1e-3,
                betas=[0.9, 0.999], eps=1e-8, weight_decay=0.05, seed=0, out_dir=str(tmp_path))
    spec.update(changes)
    path = tmp_path / name
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
    memory = _spec(tmp_path, tmp_path, "memory.json", mode="memory", batch=2, steps=1)  # a mode's own keys are checked too
    memory.write_text(memory.read_text().replace('"batch": 2', '"stale": 2'))
    lacking = subprocess.run([sys.executable, WORKER, str(memory)], capture_output=True, text=True)
    assert "lacks batch" in _one_line_error(lacking, "bench_torch_worker.py")
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
    result = run_script(BENCH, *SMALL, "--batches", "1", "2", "--train_batch", "2", "--parts", "forward", "train",
                        "deploy", "dispatch", "kernels", "--torch_ref", OFFICIAL, "--torch_python", TORCH_PYTHON, "--json_out", str(out))
    assert result.returncode == 0, result.stderr
    results = json.loads(out.read_text())["results"]
    rows = {r["what"]: r for r in results}
    # each PyTorch row right after ours of the same call and batch, both timed interleaved
    pairs = [(results[i], results[i + 1]) for i, r in enumerate(results) if r["what"].startswith("PyTorch") is False
             and i + 1 < len(results) and results[i + 1]["what"].startswith("PyTorch")]
    assert [(o["what"], t["what"], t["batch"]) for o, t in pairs] == [
        ("MindSpore GRAPH forward", "PyTorch eager forward", 1), ("MindSpore GRAPH forward", "PyTorch eager forward", 2),
        ("MindSpore train step (adamw)", "PyTorch eager train step (adamw)", 2)]
    for ours, theirs in pairs:
        assert theirs["ours_over_torch"] == ours["img_per_s"] / theirs["img_per_s"]
        assert "interleaved with the other, median of 10" in ours["note"] and "torch " in theirs["note"]
    export, ours_onnx = rows["onnxruntime (torch.onnx export)"], rows["onnxruntime (our ONNX, official weights)"]
    assert export["ours_over_torch"] == ours_onnx["img_per_s"] / export["img_per_s"]

    ours_kernel, torch_op = rows["dispatch: MindSpore GRAPH, per tiny kernel"], rows["dispatch: PyTorch eager, per tiny op"]
    assert ours_kernel["us_per_kernel"] > 0 and torch_op["us_per_kernel"] > 0
    assert torch_op["ours_over_torch"] == torch_op["us_per_kernel"] / ours_kernel["us_per_kernel"]

    kernels = [r for what, r in rows.items() if what.startswith("kernel: ")]
    assert len(kernels) == 9 and all(r["torch_ms_fwd"] > 0 and r["torch_ms_fwd_bwd"] > 0 for r in kernels)
    assert all(r["ours_over_torch"] == r["torch_ms_fwd_bwd"] / r["ms_fwd_bwd"] for r in kernels)

    numerics = [r for what, r in rows.items() if what.startswith("numerics:")]
    assert len(numerics) == 3 and all(r["relative_diff"] <= 1e-4 for r in numerics), numerics


def test_interleaved_medians_alternate_the_order_of_the_calls():
    bench = _load(BENCH, "bench_script")
    order, answers = [], {"a": iter([9.0, 3.0, 1.0, 2.0]), "b": iter([9.0, 5.0, 4.0, 6.0])}

    def timer(name):
        return lambda: order.append(name) or next(answers[name])
    medians = bench.interleaved_medians({"a": timer("a"), "b": timer("b")}, 3)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert medians == {"a": 2.0, "b": 5.0}  # the untimed first call (9.0) is left out
    assert 0.05 <= bench.clocked(lambda: time.sleep(0.05))() < 1.0


def test_worker_commands_are_checked():
    worker = _load(WORKER, "bench_torch_worker")
    assert worker.parse_command('{"cmd": "train", "batch": 64}\n') == ("train", 64, {})
    assert worker.parse_command('{"cmd": "quit"}') == ("quit", 0, {})
    assert worker.parse_command('{"cmd": "kernel", "batch": 2, "name": "q @ k^T", "backward": true}') == \
        ("kernel", 2, {"name": "q @ k^T", "backward": True})
    for line, message in (("forward 2", "is not JSON"), ('{"cmd": "backward", "batch": 2}', "cmd must be one of"),
                          ('{"cmd": "kernel", "batch": 2, "name": "q @ k^T"}', "kernel needs a name"),
                          ('{"cmd": "kernel", "batch": 2, "backward": false}', "kernel needs a name"),
                          ('{"cmd": "forward", "batch": 0}', "positive integer"),
                          ('{"cmd": "forward", "batch": "2"}', "positive integer"), ("[1]", "cmd must be one of")):
        with pytest.raises(worker.WorkerError, match=message):
            worker.parse_command(line)


# Stands in for --torch_python: passes check_torch_ref's `-c "import torch"` probe, then speaks the
# worker's protocol (whatever script it is given), logging each command; `answer` is the seconds it
# reports for the n-th command, after sleeping SLEEP, so the bench must use its answer, not a round trip.
STAND_IN = """#!{python}
import json, sys, time
if sys.argv[1] == "-c":
    sys.exit(0)
behaviour, log = {behaviour!r}, open({log!r}, "a")
print("torch-like chatter on stdout" if behaviour == "garbage" else json.dumps({{"ready": "stand-in"}}), flush=True)
for n, line in enumerate(sys.stdin):
    command = json.loads(line)
    log.write(command["cmd"] + " " + str(command.get("batch", "")) + "\\n")
    log.flush()
    if command["cmd"] == "quit":
        break
    if behaviour == "die":
        print("stand-in: error: boom", file=sys.stderr)
        sys.exit(3)
    time.sleep({sleep})
    print(json.dumps({{"seconds": 0.001 * n}}), flush=True)
"""
SLEEP = 0.05


def _stand_in(tmp_path, behaviour="serve"):
    path, log = tmp_path / f"python-{behaviour}", tmp_path / f"{behaviour}.log"
    path.write_text(STAND_IN.format(python=sys.executable, behaviour=behaviour, log=str(log), sleep=SLEEP))
    path.chmod(0o755)
    (tmp_path / "conformer.py").write_text("")
    return path, log


def _torch_cfg(tmp_path, python, repeats=3):
    return SimpleNamespace(torch_ref=str(tmp_path), torch_python=str(python), num_classes=10, drop=0.0,
                           drop_block=0.0, drop_path=0.1, image_size=32, base_lr=1e-3, beta=[0.9, 0.999], eps=1e-8,
                           weight_decay=0.05, seed=0, repeats=repeats)


def test_ours_and_the_worker_alternate_call_by_call(tmp_path):
    bench = _load(BENCH, "bench_script")
    python, log = _stand_in(tmp_path)
    cfg = _torch_cfg(tmp_path, python)
    workdir = tmp_path / "work"
    workdir.mkdir()

    def ours():
        with open(log, "a") as f:
            f.write("ours\n")
        time.sleep(SLEEP)
    with bench.TorchWorker(cfg, "conformer_reduced_patch16", str(workdir)) as worker:
        assert worker.note == "stand-in"
        rows = bench._with_torch(cfg, worker, "forward", 4, "ours", "theirs", ours)
        process = worker.process
    assert process.returncode == 0  # it was told to quit and did
    rounds = bench.INTERLEAVED_ROUNDS  # at least 10 rounds, though --repeats is 3
    pair = ["ours", "forward 4"]
    expected = pair + [c for i in range(rounds) for c in (pair if i % 2 == 0 else pair[::-1])] + ["quit "]
    assert log.read_text().splitlines() == expected
    ours_row, theirs_row = rows
    assert (ours_row["what"], theirs_row["what"], theirs_row["batch"]) == ("ours", "theirs", 4)
    # the worker's own seconds of commands 1..10 (command 0 was the warm-up), not the sleep around them
    assert theirs_row["img_per_s"] == pytest.approx(4 / (0.001 * (1 + rounds) / 2))
    assert 4 / ours_row["img_per_s"] >= SLEEP and "median of 10" in ours_row["note"]
    assert theirs_row["note"].startswith("stand-in; interleaved")
    spec = json.loads((workdir / "spec.json").read_text())
    assert spec["mode"] == "serve" and spec["hparams"]["depth"] == 3 and spec["hparams"]["embed_dim"] == 192
    assert spec["hparams"]["channel_ratio"] == 0.5 and spec["hparams"]["num_heads"] == 3


def test_a_worker_that_breaks_the_protocol_or_dies_is_one_line(tmp_path):
    for behaviour, fragment in (("garbage", "the PyTorch worker answered 'torch-like chatter on stdout' to its "
                                            "start, not a JSON object with 'ready'"),
                                ("die", "the PyTorch worker exited (status 3) before answering forward 2: "
                                        "stand-in: error: boom")):
        python, log = _stand_in(tmp_path, behaviour)
        result = run_script(BENCH, *SMALL, "--batches", "2", "--parts", "forward", "--torch_ref", str(tmp_path),
                            "--torch_python", str(python))
        assert fragment in _one_line_error(result, "bench.py") and not result.stdout
    assert log.read_text().splitlines() == ["forward 2"]  # died at its first command, after ours compiled


def test_plain_and_convs_parts_measure_the_model_before_its_cpu_formulation(tmp_path):
    out = tmp_path / "bench.json"
    result = run_script(BENCH, *SMALL, "--batches", "2", "--train_batch", "2", "--parts", "forward", "plain",
                        "convs", "dispatch", "kernels", "--json_out", str(out))
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
    # the cost of one kernel, from a call of 401 tiny ops against a call of one
    dispatch = by_name["dispatch: MindSpore GRAPH, per tiny kernel"]
    assert dispatch["us_per_kernel"] > 0 and dispatch["img_per_s"] is None
    assert f"{dispatch['us_per_kernel']:.1f} us per kernel" in dispatch["note"]
    # each single op of the model at the train batch, alone: forward, and forward with backward
    kernels = [r for r in rows if r["what"].startswith("kernel: ")]
    assert [r["what"] for r in kernels] == [
        "kernel: Linear 192->768 (fc1)", "kernel: LayerNorm 192", "kernel: GELU (MLP, 768)",
        "kernel: softmax (attention)", "kernel: q @ k^T", "kernel: qkv split into heads",
        "kernel: conv 3x3 8->8 @8", "kernel: BatchNorm 8 @8", "kernel: max pool 3x3/2 (stem) 64 @16"]
    assert all(r["batch"] == 2 and r["ms_fwd"] > 0 and r["ms_fwd_bwd"] > 0 and "ours_over_torch" not in r
               for r in kernels)
    # every op but q @ k^T also as the own CPU kernels (the linear layer: its bias)
    own = [r["what"] for r in kernels if "own_ms_fwd" in r]
    assert own == ["kernel: Linear 192->768 (fc1)", "kernel: LayerNorm 192", "kernel: GELU (MLP, 768)",
                   "kernel: softmax (attention)", "kernel: qkv split into heads", "kernel: conv 3x3 8->8 @8",
                   "kernel: BatchNorm 8 @8", "kernel: max pool 3x3/2 (stem) 64 @16"]
    assert all(r["own_ms_fwd"] > 0 and r["own_ms_fwd_bwd"] > 0 and "own kernel" in r["note"]
               for r in kernels if "own_ms_fwd" in r)


def test_cpu_kernels_part_times_the_model_with_mindspores_ops_and_with_the_own_kernels(pynative, monkeypatch):
    """The part's rows, in this process in PyNative, from one round: the rows are the subject, not the two
    models' graphs or timings (compiling them would be most of the test's time; the kernels in GRAPH mode:
    tests/kernels)."""
    from src.config import parse_args
    bench = _load(BENCH, "bench_script")
    monkeypatch.setattr(bench, "INTERLEAVED_ROUNDS", 1)
    cfg = parse_args([*SMALL, "--batches", "2", "--train_batch", "2", "--parts", "cpu_kernels"], script=bench.BENCH,
                     add_script_args=bench._script_args)
    rows = bench.bench_cpu_kernels(cfg)
    step = [r for r in rows if r["what"].startswith("cpu_kernels: train step")]
    assert [r["what"] for r in step] == ["cpu_kernels: train step, MindSpore ops",
                                         "cpu_kernels: train step, own kernels"]
    assert all(r["batch"] == 2 and r["img_per_s"] > 0 for r in step)
    assert step[0]["note"].startswith("1.00x MindSpore's ops; interleaved, median of 1;")
    assert len([r for r in rows if r["what"].startswith("cpu_kernels: forward")]) == len(step)


def test_kernel_cases_have_the_shapes_of_the_models_own_layers():
    """The cases of --parts kernels are the tensors the model computes: tiny at 224."""
    import mindspore as ms
    from tools.kernel_cases import kernel_cases
    from src.conformer import create_model
    from src.variants import variant_hparams
    bench = _load(BENCH, "bench_script")
    cases = kernel_cases(variant_hparams("conformer_tiny_patch16"), 224, 2)
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # forward pre-hooks; the mode is restored for the worker's next tests
    try:
        net = create_model("conformer_tiny_patch16", num_classes=10)
        seen = {}

        def record(name):
            def hook(cell, inputs):  # returns None: a returned value would replace the inputs
                seen.setdefault(name, tuple(inputs[0].shape))
            return hook
        hooks = [net.trans_1.mlp.fc1.register_forward_pre_hook(record("fc1")),
                 net.trans_1.norm1.register_forward_pre_hook(record("norm")),
                 # the GELU's input, seen as fc2's input (on CPU it runs inside fc1's bias kernel)
                 net.trans_1.mlp.fc2.register_forward_pre_hook(record("gelu")),
                 net.conv_1.conv2.register_forward_pre_hook(record("conv"))]
        net.set_train(False)
        net(ms.Tensor(np.zeros((2, 3, 224, 224), np.float32)))
        for hook in hooks:
            hook.remove()
        assert cases["Linear 384->1536 (fc1)"]["shape"] == seen["fc1"] and net.trans_1.mlp.fc1.out_channels == 1536
        assert cases["LayerNorm 384"]["shape"] == seen["norm"] == (2, 197, 384)
        assert cases["GELU (MLP, 1536)"]["shape"] == seen["gelu"]
        assert cases["conv 3x3 16->16 @56"]["shape"] == seen["conv"] == (2, 16, 56, 56)
        assert cases["softmax (attention)"]["shape"] == (2, 6, 197, 197)
        split = bench.kernel_op(cases["qkv split into heads"])
        q = split(ms.Tensor(np.zeros(cases["qkv split into heads"]["shape"], np.float32)))
        assert tuple(q.shape) == (2, 18, 197, 64) and cases["q @ k^T"]["shape"] == (2, 6, 197, 64)
    finally:
        ms.set_context(mode=mode)


def test_feed_part_times_the_configs_pipeline_the_step_and_the_fed_step(tmp_path):
    from datasets import write_digits_folder
    root = write_digits_folder(tmp_path / "digits", train_per_class=2, val_per_class=1)
    config = os.path.join(REPO, "src", "configs", "demo_cpu.yaml")
    common = ("--config", config, *SMALL, "--data_url", root, "--train_batch", "4", "--parts", "feed")
    too_few = run_script(BENCH, *common, "--feed_batches", "3")  # 20 images: 5 batches, 6 needed
    assert too_few.returncode == 2
    assert "feed: 5 batches of 4 in the training set, fewer than --feed_batches 3 + 3" in \
        _one_line_error(too_few, "bench.py")
    out = tmp_path / "bench.json"
    result = run_script(BENCH, *common, "--feed_batches", "2", "--json_out", str(out))
    assert result.returncode == 0, result.stderr
    rows = {r["what"]: r for r in json.loads(out.read_text())["results"]}
    data, fixed, fed = (rows[name] for name in _feed_names())
    assert all(r["batch"] == 4 and r["img_per_s"] > 0 and r["cpu_us_per_img"] > 0 for r in (data, fixed, fed))
    assert fed["note"].startswith(f"{fed['img_per_s'] / fixed['img_per_s']:.2f}x the fixed-batch step")
    assert "gflops" not in data and fed["gflops"] == pytest.approx(fixed["gflops"] * fed["img_per_s"] / fixed["img_per_s"])
    finish = rows[_load(BENCH, "bench_script").FEED_FINISH]  # the graph normalising the uint8 batches alone
    assert finish["img_per_s"] > 0 and "gflops" not in finish


def _feed_names():
    bench = _load(BENCH, "bench_script")
    return bench.FEED_DATA, bench.FEED_FIXED, bench.FEED_FED


def test_data_part_rows_threads_processes_with_and_without_a_busy_thread(tmp_path):
    """--parts data: the train recipe in 1 and 2 worker threads and processes and the eval pipeline in 2,
    each alone and beside a busy Python thread, and the train batches finished on the host, with img/s
    and CPU-ms per image (the workers' CPU included)."""
    out = tmp_path / "bench.json"
    result = run_script(BENCH, *SMALL, "--parts", "data", "--images", "16", "--num_parallel_workers", "2",
                        "--json_out", str(out))
    assert result.returncode == 0, result.stderr
    rows = {r["what"]: r for r in json.loads(out.read_text())["results"]}
    names = [f"data: train recipe, {kind}{beside}" for kind in ("1 thread", "1 process", "2 threads", "2 processes")
             for beside in ("", ", busy Python thread beside")]
    names += [f"data: eval transform, {kind}{beside}" for kind in ("2 threads", "2 processes")
              for beside in ("", ", busy Python thread beside")]
    names.append("data: train recipe, 2 processes, finished on the host (float32)")
    assert sorted(rows) == sorted(names)
    for name in names:
        assert rows[name]["img_per_s"] > 0 and rows[name]["cpu_ms_per_img"] > 0
        assert "load" in rows[name]["note"]  # the machine's load beside every figure


def test_the_busy_threads_cpu_is_left_out_and_the_workers_is_counted():
    from tools.cpu_probe import timed_beside_busy_thread
    seconds, cpu, _ = timed_beside_busy_thread(lambda: time.sleep(0.3), busy=True)
    assert seconds >= 0.3 and cpu < 0.1  # the busy thread spun (CPU) for the 0.3 s: not counted
    burner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.5\n"
                               "while time.process_time() < end: pass\nprint('done', flush=True)\ntime.sleep(30)"],
                              stdout=subprocess.PIPE, text=True)
    try:  # timed until the other process has burnt its half second of CPU (a little of it before the start)
        _, cpu, line = timed_beside_busy_thread(burner.stdout.readline, busy=False, pids=[burner.pid])
    finally:
        burner.kill()
        burner.wait()
    assert line == "done\n" and 0.3 < cpu < 0.8
