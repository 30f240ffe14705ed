"""The exportable formulations equal the PyTorch semantics they stand in for."""
import math

import numpy as np
import mindspore as ms
from mindspore import nn

from src.layers.exportable_ops import GELU, TorchMaxPool2d, upsample_nearest
from weighted_sum import WeightedSum

_erf = np.vectorize(math.erf)


def test_gelu_exact_and_exportable_match_erf_gelu():
    x = np.linspace(-8, 8, 4001, dtype=np.float32)
    reference = 0.5 * x.astype(np.float64) * (1 + _erf(x.astype(np.float64) / math.sqrt(2)))
    exact = GELU()(ms.Tensor(x)).asnumpy()
    exportable = GELU()
    exportable.exportable = True
    approx = exportable(ms.Tensor(x)).asnumpy()
    assert np.abs(exact - reference).max() < 1e-6
    assert np.abs(approx - reference).max() < 1e-6


def test_gelu_gradient_is_the_derivative_of_erf_gelu():
    x = np.linspace(-8, 8, 4001, dtype=np.float32)
    w = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    x64 = x.astype(np.float64)
    derivative = 0.5 * (1 + _erf(x64 / math.sqrt(2))) + x64 * np.exp(-x64 * x64 / 2) / math.sqrt(2 * math.pi)
    grad = ms.grad(WeightedSum(GELU(), ms.Tensor(w)))(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(grad, w * derivative, rtol=0, atol=1e-6 * np.abs(w).max())


def test_gelu_tanh_mode():
    x = np.linspace(-5, 5, 101, dtype=np.float32)
    x64 = x.astype(np.float64)
    expected = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    assert np.abs(GELU(approximate=True)(ms.Tensor(x)).asnumpy() - expected).max() < 2e-6


def _torch_maxpool_reference(x, k=3, s=2, p=1):
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    out_h = (x.shape[2] + 2 * p - k) // s + 1
    out_w = (x.shape[3] + 2 * p - k) // s + 1
    out = np.empty(x.shape[:2] + (out_h, out_w), x.dtype)
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = padded[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
    return out


def test_torch_maxpool_matches_minus_inf_padding_on_signed_input():
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 8, 8), (1, 2, 7, 10)]:
        x = rng.standard_normal(shape).astype(np.float32) - 1.0  # mostly negative: zero padding would differ
        got = TorchMaxPool2d(3, 2)(ms.Tensor(x)).asnumpy()
        np.testing.assert_array_equal(got, _torch_maxpool_reference(x))


def test_upsample_nearest_repeats_pixels():
    x = np.arange(2 * 3 * 2 * 3, dtype=np.float32).reshape(2, 3, 2, 3)

    class Up(nn.Cell):
        def construct(self, t):
            return upsample_nearest(t, 4)

    expected = x.repeat(4, axis=2).repeat(4, axis=3)
    np.testing.assert_array_equal(Up()(ms.Tensor(x)).asnumpy(), expected)
