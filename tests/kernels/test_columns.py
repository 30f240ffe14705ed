"""The columns kernel of the CPU convolution equals MindSpore's slices and concatenation
(src/kernels/columns.py: shifted_columns) without the columns that wrap around, forward and
gradient, in GRAPH mode under ms.grad, over odd sizes and the kernel sizes the model's convolutions
take after space-to-depth (2, 3, 4); and, given a stride-1 convolution's padding, the same of the
map padded by concatenation, which the kernel reads as zeros instead."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.kernels.columns import Columns
from src.layers.conv2d import zero_pad
from weighted_sum import SumGrads

# (batch, channels, rows, width, kk): rows - kk output rows of width - kk + 1 columns
CASES = [(1, 1, 3, 2, 2), (2, 3, 5, 7, 3), (3, 12, 20, 19, 4), (2, 16, 17, 58, 3), (1, 5, 4, 3, 3), (4, 64, 11, 10, 2)]


class _Valid(nn.Cell):
    """MindSpore's columns, the wrap-around ones cut."""

    def __init__(self, kk: int):
        super().__init__()
        self.columns = Columns(kk)
        self.columns.choose_kernels(plain=True)
        self.kk = kk

    def construct(self, x):
        return self.columns(x)[:, :, :, :x.shape[3] - self.kk + 1]


@pytest.mark.parametrize("b,c,rows,width,kk", CASES, ids=str)
def test_columns_kernel_equals_slices_and_concat(b, c, rows, width, kk):
    fast, plain = Columns(kk), _Valid(kk)
    assert fast.use_kernels and not plain.columns.use_kernels
    rng = np.random.RandomState(b * 1000 + c * 10 + kk)
    x = ms.Tensor(rng.randn(b, c, rows, width).astype(np.float32))
    shape = (b, kk * kk * c, rows - kk, width - kk + 1)
    sens = ms.Tensor(rng.randn(*shape).astype(np.float32))
    expected, got = plain(x).asnumpy(), fast(x).asnumpy()
    assert got.shape == expected.shape == shape
    np.testing.assert_array_equal(got, expected)  # a copy: bit for bit
    expected, got = SumGrads(plain)(x, sens).asnumpy(), SumGrads(fast)(x, sens).asnumpy()
    assert got.shape == expected.shape == (b, c, rows, width)
    # sums of up to kk * kk values, possibly in another order
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(np.abs(expected).max(), 1.0))


class _PaddedValid(nn.Cell):
    """MindSpore's columns of the map padded by concatenation (the CPU convolution's way without
    the kernel), with the overrun row the flat slices need, the wrap-around columns cut."""

    def __init__(self, kk: int, pad: int):
        super().__init__()
        self.valid = _Valid(kk)
        self.pad = pad

    def construct(self, x):
        return self.valid(zero_pad(x, self.pad, self.pad + 1, self.pad, self.pad))


# (batch, channels, rows, width, kk, pad): a stride-1 convolution's padding, read as zeros by the kernel
PADDED = [(1, 1, 1, 1, 3, 1), (2, 3, 5, 7, 3, 1), (2, 16, 14, 9, 3, 1), (1, 4, 6, 5, 5, 2), (3, 2, 2, 3, 2, 1)]


@pytest.mark.parametrize("b,c,rows,width,kk,pad", PADDED, ids=str)
def test_padding_columns_kernel_equals_concatenated_zeros_then_slices(b, c, rows, width, kk, pad):
    fast, plain = Columns(kk, pad), _PaddedValid(kk, pad)
    rng = np.random.RandomState(b * 1000 + c * 10 + kk + pad)
    x = ms.Tensor(rng.randn(b, c, rows, width).astype(np.float32))
    assert fast.pads_itself(x)
    shape = (b, kk * kk * c, rows + 2 * pad - kk + 1, width + 2 * pad - kk + 1)
    sens = ms.Tensor(rng.randn(*shape).astype(np.float32))
    expected, got = plain(x).asnumpy(), fast(x).asnumpy()
    assert got.shape == expected.shape == shape
    np.testing.assert_array_equal(got, expected)
    expected, got = SumGrads(plain)(x, sens).asnumpy(), SumGrads(fast)(x, sens).asnumpy()
    assert got.shape == expected.shape == (b, c, rows, width)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * max(np.abs(expected).max(), 1.0))
