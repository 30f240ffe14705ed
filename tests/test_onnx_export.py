"""Every op of the inference graph exports: ONNX in onnxruntime matches MindSpore."""
import numpy as np
import onnxruntime as ort
import mindspore as ms

from src.conformer import create_model
from src.tools.export import export_model
from test_fidelity import build_from_fixture


def _ort_outputs(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_tiny_onnx_matches_mindspore(tmp_path):
    net = create_model("conformer_tiny_patch16")
    net.set_train(False)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = [o.asnumpy() for o in net(ms.Tensor(x))]
    got = _ort_outputs(export_model(net, ms.Tensor(x), str(tmp_path / "tiny.onnx")), x)
    for e, g in zip(expected, got):
        assert g.shape == e.shape == (1, 1000)
        # randomly initialised conv logits reach ~1e3 (no trained BN statistics), where float32
        # resolution is ~1e-4: compare relative to the logit scale
        assert np.abs(g - e).max() <= 1e-4 * max(1.0, np.abs(e).max())


def test_converted_official_weights_onnx_within_1e4(tmp_path):
    net, ref, _ = build_from_fixture("official_p32")
    x = ref["input"]
    got = _ort_outputs(export_model(net, ms.Tensor(x), str(tmp_path / "p32.onnx")), x)
    np.testing.assert_allclose(got[0], ref["conv_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[1], ref["trans_logits"], rtol=0, atol=1e-4)
