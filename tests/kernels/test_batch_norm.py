"""The own BatchNorm2d kernels equal nn.BatchNorm2d (and, with `relu`, nn.BatchNorm2d then ReLU): the
training forward, every gradient and the running statistics it leaves (momentum and the unbiased
variance as MindSpore's op), and the inference forward and its gradients, under ms.grad,
over odd sizes."""
import numpy as np
import pytest
import mindspore as ms

from src.kernels.batch_norm import BatchNorm2d
from weighted_sum import SumGrads

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

SHAPES = [(2, 3, 5, 7), (1, 5, 1, 3), (3, 17, 9, 11), (16, 16, 14, 14), (5, 64, 4, 4)]
NAMES = ("y", "dx", "dgamma", "dbeta")


def _pair(channels: int, rng, relu: bool = False):
    fast, plain = BatchNorm2d(channels, 1e-6, 0.9, relu), BatchNorm2d(channels, 1e-6, 0.9, relu)
    plain.choose_kernels(plain=True)
    assert fast.use_kernels and not plain.use_kernels
    for name in ("gamma", "beta", "moving_mean", "moving_variance"):
        value = rng.randn(channels).astype(np.float32)
        value = np.abs(value) + 0.5 if name == "moving_variance" else value
        for cell in (fast, plain):
            getattr(cell, name).set_data(ms.Tensor(value))
    return fast, plain


def _close(name, got, expected, atol):
    assert got.shape == expected.shape, name
    scale = max(np.abs(expected).max(), 1.0)
    err = np.abs(got - expected).max()
    assert err <= atol * scale, f"{name}: error {err:.2e} (scale {scale:.1f})"


@pytest.mark.parametrize("relu", [False, True], ids=["bn", "bn+relu"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm_kernel_equals_nn_batch_norm(shape, training, relu):
    rng = np.random.RandomState(sum(shape) + training)
    fast, plain = _pair(shape[1], rng, relu)
    x = ms.Tensor((rng.randn(*shape) * 3 + 5).astype(np.float32))  # a mean far from 0
    sens = ms.Tensor(rng.randn(*shape).astype(np.float32))
    results = []
    for cell in (plain, fast):
        cell.set_train(training)
        y = cell(x).asnumpy()
        dx, (dgamma, dbeta) = SumGrads(cell)(x, sens)
        results.append([y, dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy(),
                        cell.moving_mean.asnumpy(), cell.moving_variance.asnumpy()])
    expected, got = results
    if relu:
        assert (expected[0] == 0).mean() > 0.05  # the ReLU cuts part of the map
    for name, e, g in zip(NAMES, expected, got):
        _close(name, g, e, 3e-6)
    # the running statistics after two training calls (the forward, then the gradient's), or untouched
    for name, e, g in zip(("moving_mean", "moving_variance"), expected[4:], got[4:]):
        _close(name, g, e, 1e-6)


def test_running_statistics_move_with_the_model_momentum():
    """One training call moves the running statistics 10 % of the way to the batch's (PyTorch's 0.1)."""
    rng = np.random.RandomState(0)
    x = (rng.randn(4, 3, 5, 7) * 2 + 1).astype(np.float32)
    bn = BatchNorm2d(3, 1e-6, 0.9)
    assert bn.use_kernels
    bn.set_train(True)
    bn(ms.Tensor(x))
    np.testing.assert_allclose(bn.moving_mean.asnumpy(), 0.1 * x.mean((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.asnumpy(), 0.9 + 0.1 * x.var((0, 2, 3), ddof=1), rtol=1e-5)
