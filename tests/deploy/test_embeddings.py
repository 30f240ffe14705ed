"""Embeddings: infer.py --features and infer_onnx.py --features on a model exported with --export_features."""
import json
import os

import numpy as np
import onnxruntime as ort
import pytest
import mindspore as ms

from conftest import run_script
from datasets import write_digits_folder
from src.conformer import create_model
from src.data.preprocess import eval_transform, load_rgb
from src.checkpoint import save_checkpoint_atomic

ARCH = "conformer_reduced_patch16"
SIZE = 40  # not a multiple of 32: the stem map (10 x 10) is padded to 12 x 12, in the exported graph too
MODEL = ("--arch", ARCH, "--num_classes", "10", "--device_target", "CPU", "--image_size", str(SIZE))
CROP = ("--crop_pct", "1.0")  # of the eval transform: infer.py reads it, export.py does not


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A seeded reduced net as a checkpoint; 10 digit images plus one broken file, in one folder."""
    root = tmp_path_factory.mktemp("features")
    ms.set_seed(4)
    np.random.seed(4)
    net = create_model(ARCH, num_classes=10)
    net.set_train(False)
    ckpt = str(root / "reduced.ckpt")
    save_checkpoint_atomic(net, ckpt)
    images = os.path.join(write_digits_folder(root / "digits", train_per_class=0, val_per_class=1, size=40), "val")
    (root / "digits" / "val" / "3" / "broken.png").write_bytes(b"not a png")
    return {"net": net, "ckpt": ckpt, "images": images, "root": root}


def _expected(net, paths):
    x = ms.Tensor(np.stack([eval_transform(load_rgb(p), SIZE, 1.0) for p in paths]))
    conv, trans = (o.asnumpy() for o in net.forward_embeddings(x))
    logits = sum(o.asnumpy() for o in net(x))
    return conv, trans, logits


@pytest.mark.e2e
def test_infer_and_infer_onnx_write_the_nets_embeddings_in_the_json_order(setup):
    root = setup["root"]
    output, features = root / "pred.json", root / "feats.npz"
    inferred = run_script("infer.py", setup["images"], "--checkpoint", setup["ckpt"], *MODEL, *CROP, "--batch_size", "4",
                          "--output", str(output), "--features", str(features))
    assert inferred.returncode == 0, inferred.stderr
    assert "skipped" in inferred.stderr and f"and {features}" in inferred.stderr
    predictions = json.loads(output.read_text())
    saved = np.load(features)
    assert sorted(saved.files) == ["conv", "paths", "transformer"]
    assert list(saved["paths"]) == list(predictions) and len(predictions) == 10  # the broken file left out
    conv, trans, logits = _expected(setup["net"], list(predictions))
    assert saved["conv"].shape == (10, 128) and saved["transformer"].shape == (10, 192)
    np.testing.assert_allclose(saved["conv"], conv, rtol=0, atol=1e-5 * max(1.0, np.abs(conv).max()))
    np.testing.assert_allclose(saved["transformer"], trans, rtol=0, atol=1e-5 * max(1.0, np.abs(trans).max()))
    assert list(predictions.values()) == logits.argmax(axis=1).tolist()

    onnx_path = str(root / "feats.onnx")
    exported = run_script("export.py", "--pretrained", setup["ckpt"], *MODEL, "--file_format", "ONNX",
                          "--export_features", "--output", onnx_path)
    assert exported.returncode == 0, exported.stderr
    assert "outputs: logits, conv_features, transformer_features" in exported.stdout
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1:] == [3, SIZE, SIZE]
    onnx_output, onnx_features = root / "pred_onnx.json", root / "feats_onnx.npz"
    ran = run_script("infer_onnx.py", setup["images"], "--onnx_path", onnx_path, "--image_size", str(SIZE),
                     "--crop_pct", "1.0", "--device_target", "CPU", "--batch_size", "4",
                     "--output", str(onnx_output), "--features", str(onnx_features))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(onnx_output.read_text()) == predictions
    from_onnx = np.load(onnx_features)
    assert list(from_onnx["paths"]) == list(saved["paths"])
    for key in ("conv", "transformer"):
        np.testing.assert_allclose(from_onnx[key], saved[key], rtol=0, atol=1e-4 * max(1.0, np.abs(saved[key]).max()))


@pytest.mark.e2e
def test_features_refused_where_there_are_none(setup):
    root = setup["root"]
    plain = str(root / "plain.onnx")
    exported = run_script("export.py", "--pretrained", setup["ckpt"], *MODEL, "--file_format", "ONNX", "--output", plain)
    assert exported.returncode == 0, exported.stderr
    ran = run_script("infer_onnx.py", setup["images"], "--onnx_path", plain, "--image_size", str(SIZE),
                     "--device_target", "CPU", "--output", str(root / "p.json"), "--features", str(root / "f.npz"))
    assert ran.returncode == 2
    assert ran.stderr.strip().splitlines()[-1] == (f"infer_onnx.py: error: {plain} has no feature outputs (outputs: "
                                                   "logits): export it with export.py --export_features")
    assert not (root / "f.npz").exists()
    mindir = run_script("infer.py", setup["images"], "--mindir", str(root / "any.mindir"), *MODEL,
                        "--features", str(root / "f.npz"))
    assert mindir.returncode == 2
    assert mindir.stderr.strip().splitlines()[-1].startswith("infer.py: error: --features reads the embeddings from "
                                                             "the network")
