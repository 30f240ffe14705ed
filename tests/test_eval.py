"""eval.py on a small real dataset equals top-1/top-5 and the confusion matrix computed by hand from the
model's logits, read from class folders or from a flat folder with ImageNet's labels CSV."""
import ast
import json
import os
import re
import shutil

import numpy as np
import pytest
import mindspore as ms

from conftest import REPO, pynative_mode, run_script
from datasets import write_digits_folder
from src.conformer import create_model, param_count_line
from src.data.preprocess import eval_transform, load_rgb

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARGS = ["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"), "--device_target", "CPU",
        "--arch", "conformer_reduced_patch16", "--image_size", "32", "--num_classes", "10",
        "--batch_size", "16", "--num_parallel_workers", "2"]


def _by_hand(net, root):
    """(top-1, top-5, mean cross entropy of the two heads, confusion matrix of the summed logits) over
    root/<class>/<image>, in numpy."""
    classes = sorted(os.listdir(root))
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(root, name))):
            images.append(eval_transform(load_rgb(os.path.join(root, name, file)), 32, 0.875))
            labels.append(label)
    net.set_train(False)
    with pynative_mode():
        conv, trans = (o.asnumpy().astype(np.float64) for o in net(ms.Tensor(np.stack(images))))
    labels = np.array(labels)
    ranked = np.argsort(-(conv + trans), axis=1)
    top1 = (ranked[:, 0] == labels).mean()
    top5 = (ranked[:, :5] == labels[:, None]).any(axis=1).mean()

    def cross_entropy(logits):
        logits = logits - logits.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(labels)), labels])
    confusion = np.zeros((10, 10), int)
    for label, predicted in zip(labels, ranked[:, 0]):
        confusion[label, predicted] += 1
    return top1, top5, (cross_entropy(conv) + cross_entropy(trans)) / 2, confusion


def _flat_copy(data):
    """data/val's images in one folder data/val_flat, named as ImageNet names them (an ImageId plus an
    extension), and their labels as ImageNet's LOC_val_solution.csv gives them (synset first)."""
    rows = ["ImageId,PredictionString"]
    os.makedirs(os.path.join(data, "val_flat"))
    for name in sorted(os.listdir(os.path.join(data, "val"))):
        for file in sorted(os.listdir(os.path.join(data, "val", name))):
            image_id = f"val_{name}_{os.path.splitext(file)[0]}"
            shutil.copy(os.path.join(data, "val", name, file), os.path.join(data, "val_flat", image_id + ".png"))
            rows.append(f"{image_id},{name} 3 4 28 30 {name} 0 0 31 31")
    csv_path = os.path.join(data, "LOC_val_solution.csv")
    with open(csv_path, "w") as f:
        f.write("\n".join(rows) + "\n")
    return csv_path


def test_eval_matches_logits_by_hand(tmp_path):
    data = write_digits_folder(tmp_path / "digits", train_per_class=1, val_per_class=5)
    net = create_model("conformer_reduced_patch16", num_classes=10)
    ckpt = tmp_path / "model.ckpt"
    ms.save_checkpoint(net, str(ckpt))
    results_file = tmp_path / "out" / "results.json"
    result = run_script("eval.py", *ARGS, "--data_url", data, "--crop_pct", "0.875", "--pretrained", str(ckpt),
                        "--results_file", str(results_file))
    assert result.returncode == 0, result.stderr
    start_up, *lines = result.stdout.splitlines()
    assert start_up == param_count_line(net, "conformer_reduced_patch16")
    assert len(lines) == 4 and lines[3] == "(50 images)"  # --results_file adds no line
    summed = ast.literal_eval(re.match(r"eval results: (\{.*\})$", lines[0]).group(1))
    assert lines[1].startswith("conv head: eval results: {") and lines[2].startswith("transformer head: eval results: {")
    top1, top5, loss, confusion = _by_hand(net, os.path.join(data, "val"))
    assert summed["Top1-Acc"] == round(top1, 6) and summed["Top5-Acc"] == round(top5, 6)
    assert abs(summed["Loss"] - loss) < 1e-3  # printed with 4 decimals

    written = json.loads(results_file.read_text())
    assert sorted(written) == ["class_names", "confusion_matrix", "conv", "num_images", "per_class_top1", "summed",
                               "transformer"] and written["num_images"] == 50
    assert written["class_names"] == [str(d) for d in range(10)]
    matrix = np.array(written["confusion_matrix"])
    assert np.array_equal(matrix, confusion)  # rows: true class, columns: argmax of the summed logits
    assert matrix.sum(axis=1).tolist() == [5] * 10 and np.trace(matrix) / 50 == top1
    assert written["per_class_top1"] == [confusion[c, c] / 5 for c in range(10)]
    assert written["summed"]["top1"] == top1 and written["summed"]["top5"] == top5  # unrounded
    assert abs(written["summed"]["loss"] - loss) < 1e-5
    for name, line in (("conv", lines[1]), ("transformer", lines[2])):
        printed = ast.literal_eval(line.split("eval results: ", 1)[1])
        assert sorted(written[name]) == ["loss", "top1", "top5"]
        assert (round(written[name]["top1"], 6), round(written[name]["top5"], 6), round(written[name]["loss"], 4)) \
            == (printed["Top1-Acc"], printed["Top5-Acc"], printed["Loss"])
    # the temp files of the atomic writes are gone; matplotlib (requirements-dev) draws the PNG
    assert sorted(os.listdir(results_file.parent)) == ["results.json", "results_confusion.png"]
    assert (results_file.parent / "results_confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the same images in one folder, labelled by a LOC_val_solution.csv: the same results
    flat_file = tmp_path / "out" / "flat.json"
    flat = run_script("eval.py", *ARGS, "--data_url", data, "--crop_pct", "0.875", "--pretrained", str(ckpt),
                      "--val_dir", "val_flat", "--val_labels", _flat_copy(data), "--results_file", str(flat_file))
    assert flat.returncode == 0, flat.stderr
    assert flat.stdout == result.stdout
    assert json.loads(flat_file.read_text()) == written


def test_eval_refuses_missing_checkpoint_and_data_in_one_line(tmp_path):
    data = write_digits_folder(tmp_path / "digits", train_per_class=1, val_per_class=1)
    ckpt = tmp_path / "model.ckpt"
    ms.save_checkpoint(create_model("conformer_reduced_patch16", num_classes=10), str(ckpt))
    bad_csv = str(tmp_path / "labels.csv")
    some_image = os.path.join("0", sorted(os.listdir(os.path.join(data, "val", "0")))[0])
    with open(bad_csv, "w") as f:
        f.write(f"path,label\n{some_image},0\n{some_image},ten\n")
    for extra, fragment in ((["--data_url", data], "no checkpoint given"),
                            (["--data_url", data, "--pretrained", str(tmp_path / "no.ckpt")], "checkpoint not found"),
                            (["--data_url", str(tmp_path / "none"), "--pretrained", str(ckpt)], "data folder not found"),
                            (["--data_url", data, "--pretrained", str(ckpt), "--results_file", str(ckpt / "r.json")],
                             f"cannot write {ckpt / 'r.json'}"),
                            (["--data_url", data, "--pretrained", str(ckpt), "--val_labels", bad_csv],
                             f"eval.py: error: {bad_csv} line 3: unknown class 'ten' (not one of the 10 classes of "
                             f"the class folders of {os.path.join(data, 'train')})")):
        result = run_script("eval.py", *ARGS, *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
