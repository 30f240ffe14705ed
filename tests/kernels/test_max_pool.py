"""The own max pooling kernel (the stem's 3x3/2, padding 1): PyTorch's semantics, forward and gradient,
against the edge-copy formulation it replaces and against PyTorch's rule written in NumPy."""
import numpy as np
import pytest
import mindspore as ms

from src.layers.exportable_ops import TorchMaxPool2d
from weighted_sum import SumGrads

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

SHAPES = [(1, 1, 2, 2), (2, 3, 5, 7), (3, 2, 16, 16), (1, 4, 17, 33), (2, 1, 56, 9)]


def _pools(size: int = 3, stride: int = 2):
    fast, plain = TorchMaxPool2d(size, stride), TorchMaxPool2d(size, stride)
    plain.choose_kernels(plain=True)
    assert fast.use_kernels and not plain.use_kernels
    return fast, plain


def _forward_and_grad(pool, x: np.ndarray, sens: np.ndarray) -> tuple:
    x_t = ms.Tensor(x)
    return pool(x_t).asnumpy(), SumGrads(pool)(x_t, ms.Tensor(sens)).asnumpy()


def _reference(x: np.ndarray, sens: np.ndarray, size: int, stride: int) -> tuple:
    """PyTorch's max_pool2d with padding 1: -inf padding, the first maximum in row-major window order
    wins, a NaN wins over any number (and a later NaN over an earlier one); the gradient goes to the winner."""
    b, c, h, w = x.shape
    oh, ow = (h + 2 - size) // stride + 1, (w + 2 - size) // stride + 1
    y, dx = np.empty((b, c, oh, ow), np.float32), np.zeros_like(x)
    for n, k, r, q in np.ndindex(b, c, oh, ow):
        best, at = -np.inf, None
        for i in range(max(r * stride - 1, 0), min(r * stride - 1 + size, h)):
            for j in range(max(q * stride - 1, 0), min(q * stride - 1 + size, w)):
                if at is None:
                    at = (i, j)
                v = x[n, k, i, j]
                if v > best or np.isnan(v):
                    best, at = v, (i, j)
        y[n, k, r, q] = best
        dx[n, k, at[0], at[1]] += sens[n, k, r, q]
    return y, dx


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_max_pool_kernel_equals_the_edge_copy_formulation(shape):
    rng = np.random.RandomState(sum(shape))
    x = rng.randn(*shape).astype(np.float32)
    fast, plain = _pools()
    sens = rng.randn(*fast(ms.Tensor(x)).shape).astype(np.float32)
    (y, dx), (y_plain, dx_plain) = _forward_and_grad(fast, x, sens), _forward_and_grad(plain, x, sens)
    np.testing.assert_array_equal(y, y_plain)
    np.testing.assert_allclose(dx, dx_plain, rtol=0, atol=1e-6)  # an edge's copies sum in another order


@pytest.mark.parametrize("size, stride", [(3, 2), (2, 1), (3, 1)])
def test_max_pool_kernel_breaks_ties_and_nans_as_pytorch(size, stride):
    rng = np.random.RandomState(size * 10 + stride)
    x = rng.randint(0, 3, (2, 3, 7, 6)).astype(np.float32)  # ties in nearly every window
    x[0, 0, 2, 3] = np.nan
    x[1, 2, 0, :2] = np.nan
    x[1, 1] = -np.inf
    fast, _ = _pools(size, stride)
    sens = rng.randn(*fast(ms.Tensor(x)).shape).astype(np.float32)
    y, dx = _forward_and_grad(fast, x, sens)
    y_ref, dx_ref = _reference(x, sens, size, stride)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=1e-6)


def test_every_window_in_one_pynative_process(pynative):
    """PyNative keeps one shape inference per custom function: each window's geometry must reach it
    through the inputs, or every later pool would get the first one's output shape."""
    x = np.random.RandomState(5).randn(2, 3, 9, 8).astype(np.float32)
    for size, stride in [(3, 2), (2, 1), (3, 1)]:
        fast, _ = _pools(size, stride)
        out = (2, 3, (9 + 2 - size) // stride + 1, (8 + 2 - size) // stride + 1)
        expected, _ = _reference(x, np.zeros(out, np.float32), size, stride)
        np.testing.assert_array_equal(fast(ms.Tensor(x)).asnumpy(), expected)
