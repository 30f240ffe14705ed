"""The own 1x1 convolution kernels equal ops.conv2d: forward and the gradients of input and weight, in
GRAPH mode under ms.grad, over odd sizes, on one thread and shared among threads (a batch by its
images, each thread summing its own weight gradient; one image by blocks of its product)."""
import ctypes

import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from src.kernels.build import kernel_library
from src.kernels.pointwise import Pointwise
from weighted_sum import SumGrads

# (x shape, out channels)
CASES = [((1, 1, 1, 1), 1), ((2, 3, 5, 7), 4), ((3, 17, 9, 11), 33), ((1, 64, 56, 56), 16),
         ((5, 192, 28, 29), 64), ((16, 16, 14, 14), 384), ((1, 192, 56, 57), 64)]


class _Conv(nn.Cell):
    def __init__(self, product, weight):
        super().__init__()
        self.product = product
        self.weight = ms.Parameter(weight, name="weight")

    def construct(self, x):
        return self.product(x, self.weight)


class _Plain(nn.Cell):
    def construct(self, x, w):
        return ops.conv2d(x, w)


def _results(shape, out, seed):
    rng = np.random.RandomState(seed)
    weight = ms.Tensor(rng.randn(out, shape[1], 1, 1).astype(np.float32))
    x = ms.Tensor(rng.randn(*shape).astype(np.float32))
    sens = ms.Tensor(rng.randn(shape[0], out, *shape[2:]).astype(np.float32))
    fast = Pointwise()
    assert fast.use_kernels
    results = []
    for product in (_Plain(), fast):
        cell = _Conv(product, weight)
        dx, (dw,) = SumGrads(cell)(x, sens)
        results.append([cell(x).asnumpy(), dx.asnumpy(), dw.asnumpy()])
    return results


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape,out", CASES, ids=str)
def test_pointwise_kernels_equal_conv2d(shape, out, threads):
    library = ctypes.CDLL(kernel_library())
    try:
        library.CkSetGemmThreads(threads)
        expected, got = _results(shape, out, sum(shape) + out)
    finally:
        library.CkSetGemmThreads(int(ms.get_context("runtime_num_threads") or 1))
    for name, e, g in zip(("y", "dx", "dw"), expected, got):
        assert g.shape == e.shape, name
        scale = max(np.abs(e).max(), 1.0)
        err = np.abs(g - e).max()
        assert err <= 2e-6 * scale, f"{name}: error {err:.2e} (scale {scale:.1f})"
