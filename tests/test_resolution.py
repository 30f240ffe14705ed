"""Any size works, 81 px too (not a multiple of 32): a checkpoint holds no resolution (Conformer has no position
embedding), and the stem map's zero padding runs in eval.py, infer.py and the exported ONNX graph."""
import ast
import json
import os
import re

import numpy as np
import pytest
import onnxruntime as ort
import mindspore as ms

from conftest import REPO, pynative_mode, run_script
from datasets import write_digits_folder
from src.conformer import create_model
from src.data.preprocess import eval_transform, load_rgb

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARCH = "conformer_reduced_patch16"
MODEL = ("--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"), "--arch", ARCH,
         "--num_classes", "10", "--device_target", "CPU")
CROP = ("--crop_pct", "0.875")  # of the eval transform: eval.py and infer.py read it, export.py does not


def test_a_checkpoint_evaluates_infers_and_exports_at_81_px(tmp_path):
    data = write_digits_folder(tmp_path / "digits", train_per_class=1, val_per_class=1, size=40)
    ms.set_seed(3)
    net = create_model(ARCH, num_classes=10)
    net.set_train(False)
    ckpt = str(tmp_path / "reduced.ckpt")
    ms.save_checkpoint(net, ckpt)
    val = os.path.join(data, "val")
    paths = sorted(os.path.join(val, c, f) for c in os.listdir(val) for f in os.listdir(os.path.join(val, c)))
    images = np.stack([eval_transform(load_rgb(p), 81, 0.875) for p in paths])
    with pynative_mode():
        logits = sum(o.asnumpy() for o in net(ms.Tensor(images)))  # by hand, at 81 px
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([int(os.path.basename(os.path.dirname(p))) for p in paths])

    evaluated = run_script("eval.py", *MODEL, *CROP, "--image_size", "81", "--pretrained", ckpt, "--data_url", data,
                           "--batch_size", "5", "--num_parallel_workers", "1")
    assert evaluated.returncode == 0, evaluated.stderr
    summed = ast.literal_eval(re.search(r"^eval results: (\{.*\})$", evaluated.stdout, re.M).group(1))
    assert summed["Top1-Acc"] == round(float((logits.argmax(axis=1) == labels).mean()), 6)

    output = tmp_path / "pred.json"
    inferred = run_script("infer.py", val, "--checkpoint", ckpt, *MODEL, *CROP, "--image_size", "81", "--topk", "10",
                          "--output", str(output))
    assert inferred.returncode == 0, inferred.stderr
    predictions = json.loads(output.read_text())
    for path, p in zip(paths, probs):
        got = {e["class"]: e["prob"] for e in predictions[path]}
        np.testing.assert_allclose([got[c] for c in range(10)], p, atol=1e-5)

    exported = run_script("export.py", *MODEL, "--image_size", "81", "--pretrained", ckpt, "--file_format", "ONNX",
                          "--output", str(tmp_path / "at81.onnx"))
    assert exported.returncode == 0, exported.stderr
    session = ort.InferenceSession(str(tmp_path / "at81.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, 81, 81]  # the export fixes H x W at image_size
    (onnx_logits,) = session.run(None, {"images": images})
    np.testing.assert_allclose(onnx_logits, logits, rtol=0, atol=1e-4)
