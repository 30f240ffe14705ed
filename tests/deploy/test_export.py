"""export.py as users run it: ONNX and MINDIR with a dynamic batch, refusals in one line."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import mindspore as ms

from conftest import REPO, pynative_mode, run_script
from src.checkpoint import save_checkpoint_atomic
from src.conformer import create_model
from src.deploy.export import load_mindir

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARCH = "conformer_reduced_patch16"
EXPORT = os.path.join(REPO, "export.py")  # run from other directories
SMALL = ("--arch", ARCH, "--device_target", "CPU", "--image_size", "32", "--num_classes", "4")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(checkpoint path, the net it holds) -- a seeded reduced net stands in for a trained one."""
    ms.set_seed(1)
    np.random.seed(1)
    net = create_model(ARCH, num_classes=4)
    net.set_train(False)
    path = str(tmp_path_factory.mktemp("ckpt") / "reduced.ckpt")
    save_checkpoint_atomic(net, path)
    return path, net


def _images(batch, size=32):
    return np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)


def _reference(net, x):
    conv_logits, trans_logits = (o.asnumpy() for o in net(ms.Tensor(x)))
    return conv_logits + trans_logits, conv_logits, trans_logits


def _export(ckpt, *args, cwd):
    return run_script(EXPORT, "--pretrained", ckpt, *SMALL, *args, cwd=cwd)


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("export.py: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_onnx_default_name_one_file_serves_batch_1_and_7(trained, tmp_path):
    ckpt, net = trained
    result = _export(ckpt, "--file_format", "ONNX", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / f"{ARCH}.onnx"  # named after the arch, in the current directory
    assert os.listdir(tmp_path) == [path.name]  # no temp file left behind
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import] == [11]
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["logits"]
    for value in (model.graph.input[0], model.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = _images(batch)
        (logits,) = session.run(None, {"images": x})
        np.testing.assert_allclose(logits, _reference(net, x)[0], rtol=0, atol=1e-4)


def test_onnx_export_heads(trained, tmp_path):
    ckpt, net = trained
    result = _export(ckpt, "--file_format", "ONNX", "--export_heads", "--output", "out/heads.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(tmp_path / "out" / "heads.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "conv_logits", "trans_logits"]
    x = _images(7)  # a batch size the other tests compile `net` for too
    for got, expected in zip(session.run(None, {"images": x}), _reference(net, x)):
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def test_mindir_graphcell_takes_other_batch_sizes(trained, tmp_path):
    ckpt, net = trained
    result = _export(ckpt, "--file_format", "MINDIR", "--output", "model", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    graph = load_mindir(str(tmp_path / "model.mindir"))  # the extension is added
    for batch in (1, 7):
        x = _images(batch)
        np.testing.assert_allclose(graph(ms.Tensor(x)).asnumpy(), _reference(net, x)[0], rtol=0, atol=1e-5)


def test_refuses_to_export_random_or_mismatched_weights(trained, tmp_path):
    ckpt, _ = trained
    _assert_one_line_error(run_script(EXPORT, *SMALL, "--file_format", "ONNX", cwd=tmp_path),
                           "no checkpoint given")
    _assert_one_line_error(_export(str(tmp_path / "missing.ckpt"), "--file_format", "ONNX", cwd=tmp_path),
                           "not found")
    wrong_arch = _export(ckpt, "--file_format", "ONNX", "--arch", "conformer_tiny_patch16", cwd=tmp_path)
    _assert_one_line_error(wrong_arch, "does not fit the model")
    _assert_one_line_error(_export(ckpt, "--file_format", "AIR", cwd=tmp_path), "AIR export needs an Ascend")
    assert os.listdir(tmp_path) == []


def test_tiny_224_from_a_converted_checkpoint_mindir_and_onnx(tmp_path):
    """The user path for official weights: .pth -> convert.py -> export.py, both formats, one file each; ONNX
    at batch 1 and 7, MINDIR at 7 (its GraphCell compiles once per batch size, and the dynamic batch of a
    MINDIR is test_mindir_graphcell_takes_other_batch_sizes')."""
    from torch_zip_writer import write_official_pth
    ms.set_seed(2)
    np.random.seed(2)
    net = create_model("conformer_tiny_patch16")
    write_official_pth(net, tmp_path / "Conformer_tiny_patch16.pth")
    converted = run_script("convert.py", "--src", str(tmp_path / "Conformer_tiny_patch16.pth"),
                           "--arch", "conformer_tiny_patch16", "--out", str(tmp_path / "tiny.ckpt"))
    assert converted.returncode == 0, converted.stderr
    tiny = ("--pretrained", str(tmp_path / "tiny.ckpt"), "--arch", "conformer_tiny_patch16", "--device_target", "CPU")
    for file_format in ("ONNX", "MINDIR"):
        result = run_script(EXPORT, *tiny, "--file_format", file_format, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    x = _images(7, 224)
    net.set_train(False)
    with pynative_mode():
        expected = _reference(net, x)[0]
    session = ort.InferenceSession(str(tmp_path / "conformer_tiny_patch16.onnx"), providers=["CPUExecutionProvider"])
    graph = load_mindir(str(tmp_path / "conformer_tiny_patch16.mindir"))
    scale = max(1.0, np.abs(expected).max())
    # random-init conv logits reach ~1e3 (no trained BN statistics), where float32 resolution is ~1e-4:
    # compare relative to the logit scale
    for batch in (1, 7):
        (onnx_logits,) = session.run(None, {"images": x[:batch]})
        assert onnx_logits.shape == (batch, 1000)
        assert np.abs(onnx_logits - expected[:batch]).max() <= 1e-4 * scale, f"ONNX at batch {batch}"
    mindir_logits = graph(ms.Tensor(x)).asnumpy()
    assert mindir_logits.shape == (7, 1000)
    assert np.abs(mindir_logits - expected).max() <= 1e-5 * scale
