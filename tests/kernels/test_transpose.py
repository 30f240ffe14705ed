"""The own Transpose kernel equals MindSpore's Transpose, forward and gradient, under
ms.grad: each permutation the model uses, over odd sizes, with axes of size 1 and zero-size tensors,
and permutations whose input axes stay neighbours (merged by the kernel)."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.kernels import Transpose

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

CASES = [
    ((3, 5, 7, 9), (0, 2, 1, 3)),  # attention: heads split and merged
    ((2, 19, 7, 13), (0, 2, 3, 1)),  # channels last: FCUDown, the patch tokens
    ((2, 7, 13, 19), (0, 3, 1, 2)),  # channels first: FCUUp
    ((2, 3, 5, 4, 7, 4), (0, 1, 3, 5, 2, 4)),  # space-to-depth of a stride-4 convolution
    ((1, 5, 9, 2, 11, 2), (0, 1, 3, 5, 2, 4)),  # ... stride 2, batch of one
    ((37, 41), (1, 0)),  # tiles that do not divide the sides
    ((4, 1, 6, 1, 5), (4, 3, 0, 2, 1)),  # axes of size 1 are dropped
    ((2, 3, 4, 5), (2, 3, 0, 1)),  # pairs of neighbouring axes merge into a 2-D transpose
    ((6, 5, 4), (0, 1, 2)),  # identity: one contiguous copy
    ((1, 1, 1), (2, 0, 1)),  # one element
    ((3, 0, 4), (2, 0, 1)),  # no element
    ((7,), (0,)),
]


class _Grad(nn.Cell):
    def __init__(self, cell):
        super().__init__()
        self.cell = cell
        self.grad = ms.grad(self.loss)

    def loss(self, x, sens):
        return (self.cell(x) * sens).sum()

    def construct(self, x, sens):
        return self.grad(x, sens)


@pytest.mark.parametrize("shape, perm", CASES, ids=str)
def test_transpose_kernel_equals_mindspore_transpose(shape, perm):
    rng = np.random.RandomState(len(shape) + sum(shape))
    x = rng.randn(*shape).astype(np.float32)
    sens = rng.randn(*x.transpose(perm).shape).astype(np.float32)
    fast, plain = Transpose(perm), Transpose(perm)
    plain.choose_kernels(plain=True)
    assert fast.use_kernels and not plain.use_kernels
    x_t, sens_t = ms.Tensor(x), ms.Tensor(sens)
    y = fast(x_t).asnumpy()
    np.testing.assert_array_equal(y, plain(x_t).asnumpy())  # a copy: exact
    np.testing.assert_array_equal(y, x.transpose(perm))
    if x.size:  # MindSpore's gradient of a zero-size tensor is not defined
        dx = _Grad(fast)(x_t, sens_t).asnumpy()
        np.testing.assert_array_equal(dx, _Grad(plain)(x_t, sens_t).asnumpy())
        np.testing.assert_array_equal(dx, sens.transpose(np.argsort(perm)))


def test_float16_inputs_take_mindspore_transpose():
    fast = Transpose((1, 0))
    x = np.arange(12, dtype=np.float16).reshape(3, 4)
    got = fast(ms.Tensor(x))
    assert got.dtype == ms.float16
    np.testing.assert_array_equal(got.asnumpy(), x.T)



class _TwoPermutations(nn.Cell):
    def __init__(self):
        super().__init__()
        self.first, self.second = Transpose((0, 2, 1, 3)), Transpose((0, 3, 1, 2))

    def construct(self, x):
        return self.first(x), self.second(x)


def test_transposes_of_one_input_shape_in_one_graph_keep_their_own_shapes():
    """Two kernels of one graph, same input shape, different permutations: each output its own, and
    likewise in the backward pass."""
    net = _TwoPermutations()
    x = np.random.RandomState(0).randn(2, 3, 5, 7).astype(np.float32)
    first, second = net(ms.Tensor(x))
    np.testing.assert_array_equal(first.asnumpy(), x.transpose(0, 2, 1, 3))
    np.testing.assert_array_equal(second.asnumpy(), x.transpose(0, 3, 1, 2))

    def loss(v):
        a, b = net(v)
        return (a * ms.Tensor(np.arange(a.size, dtype=np.float32).reshape(a.shape))).sum() + (b * b).sum()

    dx = ms.jit(ms.grad(loss))(ms.Tensor(x)).asnumpy()
    expected = np.arange(x.size, dtype=np.float32).reshape(2, 5, 3, 7).transpose(0, 2, 1, 3) + 2 * x
    np.testing.assert_allclose(dx, expected, rtol=1e-6)
