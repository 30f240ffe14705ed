"""The gradients' sum of squares (the global norm of the train step): the own kernel over a tuple of
tensors against MindSpore's concatenation and reduction, and against float64 NumPy."""
import numpy as np
import mindspore as ms
from mindspore import nn

from src.kernels.square_sum import SquareSum

SHAPES = [(7,), (3, 5), (1,), (64, 3, 7, 7), (4097,), (2, 3, 193), (1, 1)]


class _Of(nn.Cell):
    """A graph that hands SquareSum a tuple, as the train step does."""

    def __init__(self, square_sum: SquareSum):
        super().__init__()
        self.square_sum = square_sum

    def construct(self, *tensors):
        return self.square_sum(tensors)


def _sums(arrays) -> tuple:
    fast, plain = SquareSum(), SquareSum()
    plain.choose_kernels(plain=True)
    assert fast.use_kernels and not plain.use_kernels
    tensors = [ms.Tensor(a) for a in arrays]
    return float(_Of(fast)(*tensors).asnumpy()), float(_Of(plain)(*tensors).asnumpy())


def test_square_sum_kernel_equals_concatenation_and_float64():
    rng = np.random.RandomState(5)
    arrays = [(rng.randn(*shape) * rng.choice([1e-3, 1.0, 30.0])).astype(np.float32) for shape in SHAPES]
    expected = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays)
    fast, plain = _sums(arrays)
    assert abs(fast - expected) <= 1e-6 * expected
    assert abs(plain - expected) <= 1e-5 * expected


def test_one_tensor_and_float16_tensors():
    rng = np.random.RandomState(6)
    one = [rng.randn(3, 11).astype(np.float32)]
    fast, plain = _sums(one)
    assert abs(fast - plain) <= 1e-6 * plain
    halves = [rng.randn(5, 9).astype(np.float16), rng.randn(17).astype(np.float16)]  # amp O2/O3 gradients
    expected = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in halves)
    fast, plain = _sums(halves)
    assert abs(fast - expected) <= 1e-6 * expected and abs(plain - expected) <= 1e-5 * expected


def test_an_infinite_or_nan_gradient_makes_the_sum_not_finite():
    rng = np.random.RandomState(7)
    for bad in (np.inf, -np.inf, np.nan):
        arrays = [rng.randn(4, 4).astype(np.float32), rng.randn(9).astype(np.float32)]
        arrays[1][3] = bad
        fast, plain = _sums(arrays)
        assert not np.isfinite(fast) and not np.isfinite(plain)
    huge = [np.full(4, 3e19, np.float32)]  # squares overflow float32: an overflow, as the loss scaler needs
    fast, plain = _sums(huge)
    assert fast == plain == np.inf
