"""infer.py, infer_onnx.py, eval_onnx.py and their bash scripts, run as users run them."""
import json
import os
import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from PIL import Image

from conftest import REPO, run_script, script_env
from src.checkpoint import save_checkpoint_atomic
from src.conformer import create_model
from src.deploy.export import export_model, output_names
from src.inference.network import InferenceNet

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARCH = "conformer_reduced_patch16"
SMALL = ("--device_target", "CPU", "--image_size", "32")
MODEL = ("--arch", ARCH, "--num_classes", "4", *SMALL)
LINE = re.compile(r"^(/\S+) \(class: (\d)(, name: (\w+))?(, prob: (0\.\d{4}))?\)$")


def _script(name):
    return os.path.join(REPO, name)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A seeded reduced net saved as a checkpoint and exported to ONNX and MINDIR."""
    ms.set_seed(2)
    np.random.seed(2)
    net = create_model(ARCH, num_classes=4)
    root = tmp_path_factory.mktemp("models")
    ckpt = str(root / "reduced.ckpt")
    save_checkpoint_atomic(net, ckpt)
    example = ms.Tensor(np.zeros((1, 3, 32, 32), np.float32))
    onnx_path = export_model(InferenceNet(net), example, str(root / "reduced.onnx"), "ONNX", output_names(False))
    mindir = export_model(InferenceNet(net), example, str(root / "reduced.mindir"), "MINDIR")
    onnx_heads = export_model(InferenceNet(net, with_heads=True), example, str(root / "reduced_heads.onnx"), "ONNX",
                              output_names(True))
    return {"ckpt": ckpt, "onnx": onnx_path, "mindir": mindir, "onnx_heads": onnx_heads}


def _save(path, array, mode=None, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **kwargs)


def _noise(seed, h=40, w=48):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An ImageFolder tree: 4 classes x 2 images, extensions in mixed case and formats."""
    root = tmp_path_factory.mktemp("dataset")
    for c, name in enumerate(("ant", "bee", "cat", "dog")):
        _save(str(root / name / "a.png"), _noise(c))
        _save(str(root / name / "b.JPG"), _noise(10 + c, 56, 40), quality=95)
    return root


def _infer(script, data, output, *args, cwd=REPO):
    result = run_script(_script(script), str(data), "--output", str(output), *args, cwd=cwd)
    return result, (json.loads(output.read_text()) if output.exists() else None)


def _ms(data, output, models, *args, cwd=REPO):
    return _infer("infer.py", data, output, "--checkpoint", models["ckpt"], *MODEL, *args, cwd=cwd)


def _ort(data, output, models, *args, cwd=REPO):
    return _infer("infer_onnx.py", data, output, "--onnx_path", models["onnx"], *SMALL, *args, cwd=cwd)


def _assert_one_line_error(result, prog, fragment):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and fragment in lines[0], result.stderr


def _lines(result):
    """{path: class} parsed from the console lines, each checked against the documented format."""
    parsed = {}
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        assert match, line
        parsed[match.group(1)] = int(match.group(2))
    return parsed


def test_mindspore_mindir_and_onnx_label_a_folder_identically(models, dataset, tmp_path):
    ms_result, ms_json = _ms(dataset, tmp_path / "ms.json", models, "--batch", "3")  # 8 = 3 + 3 + short 2
    assert ms_result.returncode == 0, ms_result.stderr
    expected = sorted(str(p) for p in dataset.rglob("*.*"))
    assert sorted(ms_json) == expected and all(isinstance(v, int) and 0 <= v < 4 for v in ms_json.values())
    assert _lines(ms_result) == ms_json
    mindir_result, mindir_json = _infer("infer.py", dataset, tmp_path / "mindir.json", "--mindir", models["mindir"],
                                        *SMALL)
    assert mindir_result.returncode == 0, mindir_result.stderr
    ort_result, ort_json = _ort(dataset, tmp_path / "ort.json", models, "--batch", "5", "--prefetch", "2")
    assert ort_result.returncode == 0, ort_result.stderr
    assert ms_json == mindir_json == ort_json
    assert not (tmp_path / "ort.json.errors.json").exists()
    assert sorted(os.listdir(tmp_path)) == ["mindir.json", "ms.json", "ort.json"]  # no temp files left


def test_topk_and_class_names(models, dataset, tmp_path):
    _, plain = _ort(dataset, tmp_path / "plain.json", models)
    names_file = tmp_path / "names.txt"
    names_file.write_text("ant\nbee\ncat\ndog\n")
    result, top = _ort(dataset, tmp_path / "top.json", models, "--topk", "3", "--class_names", str(names_file))
    assert result.returncode == 0, result.stderr
    names = ["ant", "bee", "cat", "dog"]
    for path, entries in top.items():
        assert [set(e) for e in entries] == [{"class", "prob", "name"}] * 3
        assert entries[0]["class"] == plain[path]
        assert [e["name"] for e in entries] == [names[e["class"]] for e in entries]
        probs = [e["prob"] for e in entries]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        assert match and match.group(4) == names[int(match.group(2))], line
        assert float(match.group(6)) == pytest.approx(top[match.group(1)][0]["prob"], abs=1e-4)
    # a dataset folder gives the same names (its sorted subfolders); a wrong count is one line
    _, from_dir = _ort(dataset, tmp_path / "dir.json", models, "--topk", "1", "--class_names", str(dataset))
    assert {p: e[0]["name"] for p, e in from_dir.items()} == {p: names[c] for p, c in plain.items()}
    names_file.write_text("ant\nbee\n")
    _assert_one_line_error(_ort(dataset, tmp_path / "bad.json", models, "--class_names", str(names_file))[0],
                           "infer_onnx.py", "has 2 classes, the model predicts 4")


def _bad_folder(root):
    """Every kind of awkward input; returns (images expected to be labelled, {name: expected reason})."""
    base = _noise(5, 36, 44)
    _save(f"{root}/rgb.png", base)
    _save(f"{root}/sub/deeper/nested.jpeg", base, quality=90)  # nested folders are searched
    _save(f"{root}/cmyk.jpg", base, "CMYK")
    _save(f"{root}/palette.png", base, "P")
    _save(f"{root}/palette_as_rgb.png", np.asarray(Image.fromarray(base).convert("P").convert("RGB")))
    rgba = np.dstack([base, np.random.default_rng(6).integers(0, 256, base.shape[:2], dtype=np.uint8)])
    _save(f"{root}/rgba.png", rgba)  # alpha is dropped, as convert('RGB') does: same as rgb.png
    gray = base[..., 0]
    _save(f"{root}/gray.png", gray)
    _save(f"{root}/gray_as_rgb.png", np.dstack([gray] * 3))
    Image.fromarray(gray.astype(np.uint16) * 257).save(f"{root}/gray16.png")  # 16-bit: same as gray.png
    _save(f"{root}/one_pixel.bmp", base[:1, :1])
    _save(f"{root}/wide_2000x3.webp", _noise(7, 3, 2000), lossless=True)
    _save(f"{root}/UPPER.JPEG", base)
    jpeg = io.BytesIO()
    Image.fromarray(base).save(jpeg, "JPEG")
    open(f"{root}/truncated.jpg", "wb").write(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    open(f"{root}/text.jpg", "w").write("not an image\n")
    open(f"{root}/empty.png", "wb").close()
    open(f"{root}/notes.txt", "w").write("not an image extension: ignored\n")
    _save(f"{root}/locked.png", base)
    os.chmod(f"{root}/locked.png", 0)
    bad = {"truncated.jpg": "cannot decode", "text.jpg": "not an image file", "empty.png": "not an image file"}
    if os.access(f"{root}/locked.png", os.R_OK):  # root reads a mode-000 file: then it is labelled
        good = ["locked.png"]
    else:
        good, bad["locked.png"] = [], "permission denied"
    good += ["rgb.png", "sub/deeper/nested.jpeg", "cmyk.jpg", "palette.png", "palette_as_rgb.png", "rgba.png",
             "gray.png", "gray_as_rgb.png", "gray16.png", "one_pixel.bmp", "wide_2000x3.webp", "UPPER.JPEG"]
    return good, bad


def test_bad_inputs_are_reported_and_skipped(models, tmp_path):
    root = tmp_path / "bad"
    good, bad = _bad_folder(str(root))
    output = tmp_path / "out" / "pred.json"
    result, top = _ort(root, output, models, "--topk", "4", "--batch", "4")
    assert result.returncode == 0, result.stderr
    assert sorted(top) == sorted(str(root / name) for name in good)
    errors = json.loads((tmp_path / "out" / "pred.json.errors.json").read_text())
    assert sorted(errors) == sorted(str(root / name) for name in bad)
    warnings = [line for line in result.stderr.splitlines() if ": warning: " in line]
    assert len(warnings) == len(bad)
    for name, reason in bad.items():
        assert reason in errors[str(root / name)]
        assert any(str(root / name) in w and reason in w for w in warnings)
    # modes are converted, not mangled: each image gives exactly the prediction of its RGB equivalent
    probs = {os.path.relpath(p, root): [e["prob"] for e in sorted(v, key=lambda e: e["class"])] for p, v in top.items()}
    for image, rgb in (("rgba.png", "rgb.png"), ("palette.png", "palette_as_rgb.png"),
                       ("gray.png", "gray_as_rgb.png"), ("gray16.png", "gray_as_rgb.png")):
        np.testing.assert_allclose(probs[image], probs[rgb], atol=1e-5, err_msg=image)
    assert np.abs(np.subtract(probs["gray.png"], probs["rgb.png"])).max() > 1e-3  # the check can fail
    # MindSpore (padded short last batch) labels the same images the same way
    ms_result, ms_json = _ms(root, tmp_path / "ms.json", models, "--batch", "4")
    assert ms_result.returncode == 0, ms_result.stderr
    assert ms_json == {p: v[0]["class"] for p, v in top.items()}
    assert json.loads((tmp_path / "ms.json.errors.json").read_text()) == errors


def test_unusable_input_fails_in_one_line(models, tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_ort(tmp_path / "empty", tmp_path / "p.json", models)[0], "infer_onnx.py", "no image files")
    _assert_one_line_error(_ort(tmp_path / "missing", tmp_path / "p.json", models)[0], "infer_onnx.py",
                           "no such file or directory")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_text("text")
    result, _ = _ort(tmp_path / "junk", tmp_path / "p.json", models)
    assert result.returncode == 2 and "none of the 1 images could be read" in result.stderr.splitlines()[-1]
    assert (tmp_path / "p.json.errors.json").exists() and not (tmp_path / "p.json").exists()
    image = tmp_path / "img.png"
    _save(str(image), _noise(0))
    missing_onnx = run_script(_script("infer_onnx.py"), str(image), "--onnx_path", str(tmp_path / "no.onnx"), *SMALL)
    _assert_one_line_error(missing_onnx, "infer_onnx.py", "ONNX file not found")
    _assert_one_line_error(_ms(image, tmp_path / "p.json", {"ckpt": str(tmp_path / "no.ckpt")})[0], "infer.py",
                           "checkpoint not found")
    wrong_size = run_script(_script("infer_onnx.py"), str(image), "--onnx_path", models["onnx"],
                            "--device_target", "CPU", "--image_size", "64")
    _assert_one_line_error(wrong_size, "infer_onnx.py", "pass --image_size 32")
    (tmp_path / "classes" / "empty_class").mkdir(parents=True)
    for dataset_dir, fragment in ((tmp_path / "classes", "class folder has no images"), (tmp_path / "nowhere", "not found")):
        result = run_script(_script("eval_onnx.py"), str(dataset_dir), "--onnx_path", models["onnx"], *SMALL)
        _assert_one_line_error(result, "eval_onnx.py", fragment)


def test_eval_onnx_matches_the_predictions(models, dataset, tmp_path):
    results_file = tmp_path / "r" / "onnx.json"
    result = run_script(_script("eval_onnx.py"), str(dataset), "--onnx_path", models["onnx"], "-m", "CPU",
                        "--image_size", "32", "--prefetch", "3", "--results_file", str(results_file))
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"eval results: \{'Top1-Acc': ([0-9.]+), 'Top5-Acc': ([0-9.]+)\}\n", result.stdout)
    assert match, result.stdout
    _, predictions = _ort(dataset, tmp_path / "p.json", models)
    classes = sorted(os.listdir(dataset))
    correct = sum(classes.index(os.path.basename(os.path.dirname(p))) == c for p, c in predictions.items())
    assert float(match.group(1)) == round(correct / len(predictions), 6)
    assert float(match.group(2)) == 1.0  # 4 classes: the top 5 holds every class
    # the exported model gives the summed logits only: no heads and no loss in the file
    confusion = np.zeros((4, 4), int)
    for path, predicted in predictions.items():
        confusion[classes.index(os.path.basename(os.path.dirname(path))), predicted] += 1
    assert json.loads(results_file.read_text()) == {
        "num_images": len(predictions), "summed": {"top1": correct / len(predictions), "top5": 1.0},
        "per_class_top1": [confusion[c, c] / 2 for c in range(4)], "confusion_matrix": confusion.tolist(),
        "class_names": classes}
    assert sorted(os.listdir(results_file.parent)) == ["onnx.json", "onnx_confusion.png"]


def _flat_with_labels(dataset, root):
    """The dataset's images in one folder, labelled by a path,label CSV (class names for some rows,
    indices for others); -> (folder, CSV path)."""
    flat = root / "flat"
    flat.mkdir()
    rows = ["path,label"]
    for c, name in enumerate(sorted(os.listdir(dataset))):
        for file in sorted(os.listdir(dataset / name)):
            shutil.copy(dataset / name / file, flat / f"{name}_{file}")
            rows.append(f"{name}_{file},{name if file.startswith('a') else c}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return flat, root / "labels.csv"


def test_eval_onnx_with_heads_on_a_labels_csv_equals_eval_py_on_class_folders(models, dataset, tmp_path):
    flat, labels = _flat_with_labels(dataset, tmp_path)
    onnx_file, ms_file = tmp_path / "onnx.json", tmp_path / "ms.json"
    result = run_script(_script("eval_onnx.py"), str(flat), "--val_labels", str(labels), "--onnx_path",
                        models["onnx_heads"], *SMALL, "--data_url", str(dataset.parent), "--train_dir", dataset.name,
                        "--results_file", str(onnx_file))
    assert result.returncode == 0, result.stderr
    ms_result = run_script("eval.py", "--checkpoint", models["ckpt"], *MODEL, "--data_url", str(dataset.parent),
                           "--val_dir", dataset.name, "--batch_size", "8", "--num_parallel_workers", "2",
                           "--results_file", str(ms_file))
    assert ms_result.returncode == 0, ms_result.stderr
    by_onnx, by_ms = json.loads(onnx_file.read_text()), json.loads(ms_file.read_text())
    assert sorted(by_onnx) == sorted(by_ms) and by_onnx["class_names"] == ["ant", "bee", "cat", "dog"]
    for key in ("num_images", "per_class_top1", "confusion_matrix", "class_names"):
        assert by_onnx[key] == by_ms[key], key
    for head in ("summed", "conv", "transformer"):  # the heads and the loss come from the --export_heads outputs
        assert sorted(by_onnx[head]) == ["loss", "top1", "top5"]
        assert by_onnx[head] == pytest.approx(by_ms[head], abs=1e-4)
    bad = tmp_path / "bad.csv"
    bad.write_text(labels.read_text() + "gone.png,ant\n")
    result = run_script(_script("eval_onnx.py"), str(flat), "--val_labels", str(bad), "--onnx_path", models["onnx"],
                        *SMALL, "--data_url", str(dataset.parent), "--train_dir", dataset.name)
    _assert_one_line_error(result, "eval_onnx.py", f"{bad} line 10: no image file 'gone.png' in {flat}")


def test_infer_reports_accuracy_against_a_labels_csv(models, dataset, tmp_path):
    flat, labels = _flat_with_labels(dataset, tmp_path)
    result, predictions = _ms(flat, tmp_path / "p.json", models, "--val_labels", str(labels),
                              "--class_names", str(dataset))
    assert result.returncode == 0, result.stderr
    assert all(isinstance(v, int) for v in predictions.values()) and _lines(result) == predictions  # unchanged
    truth = {str(flat / row.split(",")[0]): sorted(os.listdir(dataset)).index(row.split("_")[0])
             for row in labels.read_text().splitlines()[1:]}
    top1 = round(sum(predictions[p] == c for p, c in truth.items()) / 8, 6)
    assert result.stderr.splitlines()[-1] == \
        f"infer.py: against {labels}: {{'Top1-Acc': {top1}, 'Top5-Acc': 1.0}} (8 of its 8 images)"
    # names need --class_names to be indexed: without it one line names the row
    result, _ = _ort(flat, tmp_path / "q.json", models, "--val_labels", str(labels))
    _assert_one_line_error(result, "infer_onnx.py", f"{labels} line 2: class 'ant' is a name, but there are no "
                                                    "class names to index it by (give them with --class_names")


def _bash(script, *args, cwd):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_scripts_run_from_another_directory(models, dataset, tmp_path):
    os.symlink(dataset, tmp_path / "data")  # relative paths are the caller's
    result = _bash("run_infer_gpu.sh", "data", "--checkpoint", models["ckpt"], "--arch", ARCH, "--output", "ms.json",
                   "--extra", "--device_target", "CPU", "--image_size", "32", "--num_classes", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = _bash("run_infer_onnx.sh", "data", "--onnx_path", models["onnx"], "--output", "ort.json",
                   "--extra", "--device_target", "CPU", "--image_size", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ms_json, ort_json = (json.loads((tmp_path / name).read_text()) for name in ("ms.json", "ort.json"))
    assert ms_json == ort_json and len(ms_json) == 8
    result = _bash("run_eval_onnx.sh", "data", "--onnx_path", models["onnx"], "--extra", "--device_target", "CPU",
                   "--image_size", "32", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("eval results: {'Top1-Acc': "), result.stderr
    result = _bash("run_infer_onnx.sh", "data", "--bogus", "1", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("run_infer_onnx.sh: error: unknown argument --bogus")


def _closed_early(script, args, tmp_path):
    """Run `script` with its stdout read by nobody: the pipe's read end is closed before the script
    writes, so its first line fails with EPIPE (`| head -n 0`; `| head -n 1` fails on a later line)."""
    proc = subprocess.Popen([sys.executable, _script(script), *args], cwd=tmp_path,
                            env=script_env([_script(script), *args], tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.wait(timeout=600)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr and "Broken" not in stderr, stderr
    return proc.returncode, stderr


def test_a_reader_that_closes_stdout_early_stops_nothing_but_the_lines(models, dataset, tmp_path):
    for script, args in (("infer.py", ["--checkpoint", models["ckpt"], *MODEL]),
                         ("infer_onnx.py", ["--onnx_path", models["onnx"], *SMALL])):
        output = tmp_path / f"{script}.json"
        status, stderr = _closed_early(script, [str(dataset), "--output", str(output), *args], tmp_path)
        # every image is still labelled: the JSON is what infer is for
        assert status == 0 and f"labelled 8 images; wrote {output}" in stderr, stderr
        assert len(json.loads(output.read_text())) == 8
    # a real `| head -n 1`: the reader gets its line, the JSON is complete, the pipeline succeeds
    output = tmp_path / "head.json"
    command = " ".join([sys.executable, _script("infer_onnx.py"), str(dataset), "--output", str(output),
                        "--onnx_path", models["onnx"], *SMALL, "--batch", "1"])
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {command} | head -n 1"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stdout.splitlines()) == 1 and LINE.match(result.stdout.strip())
    assert len(json.loads(output.read_text())) == 8


def test_eval_scripts_whose_reader_went_away_exit_141_quietly(models, dataset, tmp_path):
    os.makedirs(tmp_path / "data")
    os.symlink(dataset, tmp_path / "data" / "val")
    config = os.path.join(REPO, "src", "configs", "conformer_tiny.yaml")
    eval_args = ["--config", config, "--pretrained", models["ckpt"], "--data_url", str(tmp_path / "data"), *MODEL,
                 "--batch_size", "4", "--num_parallel_workers", "1"]
    for script, args in (("eval.py", eval_args), ("eval_onnx.py", [str(dataset), "--onnx_path", models["onnx"], *SMALL])):
        status, stderr = _closed_early(script, args, tmp_path)
        assert status == 141, (script, stderr)  # as a tool stopped by SIGPIPE: the results were not read


# An interpreter in which `import mindspore` (or any mindspore.x) fails, running a script as `python
# SCRIPT ARGS` would: the onnxruntime half of src/deploy must not need MindSpore at all.
_WITHOUT_MINDSPORE = ("import runpy, sys; sys.modules['mindspore'] = None; "
                      "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_the_onnxruntime_scripts_run_without_mindspore(models, dataset, tmp_path):
    output = tmp_path / "p.json"
    infer = run_script("-c", _WITHOUT_MINDSPORE, _script("infer_onnx.py"), str(dataset), "--onnx_path",
                       models["onnx"], *SMALL, "--output", str(output))
    assert infer.returncode == 0, infer.stderr
    _, with_mindspore = _ort(dataset, tmp_path / "with.json", models)
    assert json.loads(output.read_text()) == with_mindspore
    evaluated = run_script("-c", _WITHOUT_MINDSPORE, _script("eval_onnx.py"), str(dataset), "--onnx_path",
                           models["onnx"], *SMALL)
    assert evaluated.returncode == 0 and evaluated.stdout.startswith("eval results: "), evaluated.stderr
    # the guard itself works: a script that needs MindSpore fails under it
    blocked = run_script("-c", _WITHOUT_MINDSPORE, _script("infer.py"), "--help")
    assert blocked.returncode != 0 and "mindspore" in blocked.stderr.lower()


def test_flip_tta_in_infer_infer_onnx_and_eval_onnx_is_the_mean_over_the_mirror(models, dataset, tmp_path):
    """--tta flip: each script's probabilities are the softmax of the logits of the image and its mirror,
    averaged, as two passes of the network computed here give (infer.py averages inside the graph,
    the onnxruntime scripts around the session)."""
    from src.data.preprocess import eval_transform, load_rgb
    from src.inference.predict import softmax
    paths = sorted(str(p) for p in dataset.rglob("*.*"))
    images = np.stack([eval_transform(load_rgb(p), 32, 0.875) for p in paths])
    net = create_model(ARCH, num_classes=4)
    ms.load_param_into_net(net, ms.load_checkpoint(models["ckpt"]))
    summed = InferenceNet(net)
    summed.set_train(False)
    plain, mirrored = (summed(ms.Tensor(x)).asnumpy() for x in (images, images[..., ::-1].copy()))
    expected, unflipped = softmax((plain + mirrored) / 2), softmax(plain)
    assert np.abs(expected - unflipped).max() > 1e-3  # the flip changes what is compared
    for name, (result, predictions) in (
            ("infer.py", _ms(dataset, tmp_path / "ms.json", models, "--tta", "flip", "--topk", "4")),
            ("infer_onnx.py", _ort(dataset, tmp_path / "ort.json", models, "--tta", "flip", "--topk", "4"))):
        assert result.returncode == 0, result.stderr
        for i, path in enumerate(paths):
            got = {entry["class"]: entry["prob"] for entry in predictions[path]}
            np.testing.assert_allclose([got[c] for c in range(4)], expected[i], rtol=0, atol=2e-6, err_msg=name)
    result = run_script(_script("eval_onnx.py"), str(dataset), "--onnx_path", models["onnx"], *SMALL,
                        "--tta", "flip")
    assert result.returncode == 0, result.stderr
    labels = np.array([sorted(os.listdir(dataset)).index(os.path.basename(os.path.dirname(p))) for p in paths])
    top1 = round(float((expected.argmax(axis=1) == labels).mean()), 6)
    assert result.stdout == f"eval results: {{'Top1-Acc': {top1}, 'Top5-Acc': 1.0}}\n"
