"""The columns kernel of the CPU convolution equals im2col written out in NumPy (every output value
read from x or from the zero padding), and its gradient equals the columns' gradient added back into
place, under ms.grad, over odd sizes and every kernel size, stride and padding the
model's convolutions take (the convolution built on it: tests/layers/test_conv2d.py)."""
import numpy as np
import pytest
import mindspore as ms

from src.kernels.columns import Columns
from src.kernels.ops import output_size
from weighted_sum import SumGrads

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

# (batch, channels, rows, width, kernel size, stride, padding)
CASES = [
    (2, 3, 32, 32, 7, 2, 3),    # the stem
    (1, 3, 33, 18, 7, 2, 3),    # the stem on odd sizes
    (2, 5, 16, 16, 4, 4, 0),    # patch embedding, patch 16
    (1, 4, 30, 35, 4, 4, 0),    # patch embedding, input not a multiple of the stride
    (2, 6, 8, 8, 3, 1, 1),      # bottleneck 3x3
    (3, 4, 9, 7, 3, 2, 1),      # first bottleneck of a stage, odd sizes
    (2, 8, 7, 9, 1, 2, 0),      # strided residual 1x1
    (1, 1, 1, 1, 3, 1, 1),      # one pixel: all but the centre is padding
    (2, 3, 5, 7, 5, 3, 2),      # a shape the model does not use
    (1, 2, 4, 3, 2, 1, 1),      # an even kernel with padding
]


def im2col(x: np.ndarray, k: int, s: int, p: int) -> np.ndarray:
    b, c, h, w = x.shape
    padded = np.zeros((b, c, h + 2 * p, w + 2 * p), x.dtype)
    padded[:, :, p:p + h, p:p + w] = x
    oh, ow = output_size(h, k, s, p), output_size(w, k, s, p)
    col = np.empty((b, k * k, c, oh, ow), x.dtype)
    for i in range(k):
        for j in range(k):
            col[:, i * k + j] = padded[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s]
    return col.reshape(b, k * k * c, oh, ow)


def col2im(dcol: np.ndarray, shape: tuple, k: int, s: int, p: int) -> np.ndarray:
    b, c, h, w = shape
    oh, ow = dcol.shape[2:]
    padded = np.zeros((b, c, h + 2 * p, w + 2 * p), np.float64)
    parts = dcol.reshape(b, k * k, c, oh, ow)
    for i in range(k):
        for j in range(k):
            padded[:, :, i:i + s * (oh - 1) + 1:s, j:j + s * (ow - 1) + 1:s] += parts[:, i * k + j]
    return padded[:, :, p:p + h, p:p + w]


@pytest.mark.parametrize("b,c,h,w,k,s,p", CASES, ids=str)
def test_columns_kernel_equals_numpy_im2col_and_its_gradient(b, c, h, w, k, s, p):
    cell = Columns(k, s, p)
    rng = np.random.RandomState(b * 1000 + c * 100 + k * 10 + s + p)
    x = rng.randn(b, c, h, w).astype(np.float32)
    assert cell.uses_kernel(ms.Tensor(x))
    expected = im2col(x, k, s, p)
    got = cell(ms.Tensor(x)).asnumpy()
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)  # a copy: bit for bit, zeros where the padding is read
    sens = rng.randn(*expected.shape).astype(np.float32)
    grad = SumGrads(cell)(ms.Tensor(x), ms.Tensor(sens)).asnumpy()
    reference = col2im(sens, x.shape, k, s, p)
    # sums of up to k * k values in float32, in another order than float64's
    np.testing.assert_allclose(grad, reference, rtol=0, atol=1e-5 * max(np.abs(reference).max(), 1.0))


def test_every_geometry_in_one_pynative_process(pynative):
    """PyNative keeps one shape inference per custom function: each convolution's geometry must reach it
    through the inputs, or every later one would get the first one's output shape."""
    for b, c, h, w, k, s, p in CASES:
        x = np.random.RandomState(k * 10 + s).randn(b, c, h, w).astype(np.float32)
        np.testing.assert_array_equal(Columns(k, s, p)(ms.Tensor(x)).asnumpy(), im2col(x, k, s, p))
