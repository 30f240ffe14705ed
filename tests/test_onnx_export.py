"""Every op of the inference graph exports: converted official weights in onnxruntime match PyTorch.

Tiny at 224 is exported through export.py in test_export.py."""
import numpy as np
import onnxruntime as ort
import mindspore as ms

from src.tools.export import export_model
from test_fidelity import build_from_fixture


def _ort_outputs(path, x):
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_converted_official_weights_onnx_within_1e4(tmp_path):
    net, ref, _ = build_from_fixture("official_p32")
    x = ref["input"]
    got = _ort_outputs(export_model(net, ms.Tensor(x), str(tmp_path / "p32.onnx")), x)
    np.testing.assert_allclose(got[0], ref["conv_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(got[1], ref["trans_logits"], rtol=0, atol=1e-4)
