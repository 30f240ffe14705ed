"""eval.py on a small real dataset equals top-1/top-5 computed by hand from the model's logits."""
import ast
import json
import os
import re

import numpy as np
import pytest
import mindspore as ms

from conftest import REPO, run_script
from datasets import write_digits_folder
from src.conformer import create_model, param_count_line
from src.data.preprocess import eval_transform, load_rgb

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARGS = ["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"), "--device_target", "CPU",
        "--arch", "conformer_reduced_patch16", "--image_size", "32", "--num_classes", "10",
        "--batch_size", "16", "--num_parallel_workers", "2"]


def _by_hand(net, root):
    """(top-1, top-5, mean cross entropy of the two heads) over root/<class>/<image>, in numpy."""
    classes = sorted(os.listdir(root))
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in sorted(os.listdir(os.path.join(root, name))):
            images.append(eval_transform(load_rgb(os.path.join(root, name, file)), 32, 0.875))
            labels.append(label)
    net.set_train(False)
    conv, trans = (o.asnumpy().astype(np.float64) for o in net(ms.Tensor(np.stack(images))))
    labels = np.array(labels)
    ranked = np.argsort(-(conv + trans), axis=1)
    top1 = (ranked[:, 0] == labels).mean()
    top5 = (ranked[:, :5] == labels[:, None]).any(axis=1).mean()

    def cross_entropy(logits):
        logits = logits - logits.max(axis=1, keepdims=True)
        return np.mean(np.log(np.exp(logits).sum(axis=1)) - logits[np.arange(len(labels)), labels])
    return top1, top5, (cross_entropy(conv) + cross_entropy(trans)) / 2


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
    top1, top5, loss = _by_hand(net, os.path.join(data, "val"))
    assert summed["Top1-Acc"] == round(top1, 6) and summed["Top5-Acc"] == round(top5, 6)
    assert abs(summed["Loss"] - loss) < 1e-3  # printed with 4 decimals

    written = json.loads(results_file.read_text())
    assert sorted(written) == ["conv", "num_images", "summed", "transformer"] and written["num_images"] == 50
    assert written["summed"]["top1"] == top1 and written["summed"]["top5"] == top5  # unrounded
    assert abs(written["summed"]["loss"] - loss) < 1e-5
    for name, line in (("conv", lines[1]), ("transformer", lines[2])):
        printed = ast.literal_eval(line.split("eval results: ", 1)[1])
        assert sorted(written[name]) == ["loss", "top1", "top5"]
        assert (round(written[name]["top1"], 6), round(written[name]["top5"], 6), round(written[name]["loss"], 4)) \
            == (printed["Top1-Acc"], printed["Top5-Acc"], printed["Loss"])
    assert os.listdir(results_file.parent) == ["results.json"]  # the temp file of the atomic write is gone


def test_eval_refuses_missing_checkpoint_and_data_in_one_line(tmp_path):
    data = write_digits_folder(tmp_path / "digits", train_per_class=1, val_per_class=1)
    ckpt = tmp_path / "model.ckpt"
    ms.save_checkpoint(create_model("conformer_reduced_patch16", num_classes=10), str(ckpt))
    for extra, fragment in ((["--data_url", data], "no checkpoint given"),
                            (["--data_url", data, "--pretrained", str(tmp_path / "no.ckpt")], "checkpoint not found"),
                            (["--data_url", str(tmp_path / "none"), "--pretrained", str(ckpt)], "data folder not found"),
                            (["--data_url", data, "--pretrained", str(ckpt), "--results_file", str(ckpt / "r.json")],
                             f"cannot write {ckpt / 'r.json'}")):
        result = run_script("eval.py", *ARGS, *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and fragment in lines[0], result.stderr
