"""Each own CPU kernel equals MindSpore's op: forward and every gradient, under ms.grad,
over odd sizes (a last axis of 7, 193, 384 and 517 values; one row, 3 x 5 rows, 2031 rows)."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops

from src.kernels import LayerNorm, Softmax
from src.layers.exportable_ops import GELU
from weighted_sum import SumGrads

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

SHAPES = [(1, 7), (3, 5, 193), (2, 384), (3, 5, 7), (1, 1, 384), (3, 677, 517)]


def _forward_and_grads(cell, x, sens) -> list:
    grads = SumGrads(cell)(x, sens)
    grads = [grads[0], *grads[1]] if isinstance(grads, tuple) else [grads]
    return [cell(x).asnumpy(), *(g.asnumpy() for g in grads)]


def _pair(make):
    """(kernel cell, plain cell) with the same parameters."""
    fast, plain = make(), make()
    plain.choose_kernels(plain=True)
    assert fast.use_kernels and not plain.use_kernels
    for p, q in zip(fast.trainable_params(), plain.trainable_params()):
        q.set_data(p.data)
    return fast, plain


def _compare(make, x: np.ndarray, atol: float, names: tuple, params=None):
    rng = np.random.RandomState(x.size)
    fast, plain = _pair(make)
    for p in fast.trainable_params() + plain.trainable_params():  # not the ones/zeros a fresh norm has
        p.set_data(ms.Tensor(params[p.name.split(".")[-1]]))
    x_t, sens = ms.Tensor(x), ms.Tensor(rng.randn(*x.shape).astype(np.float32))
    expected, got = _forward_and_grads(plain, x_t, sens), _forward_and_grads(fast, x_t, sens)
    assert len(got) == len(expected) == len(names)
    for name, e, g in zip(names, expected, got):
        assert g.shape == e.shape, name
        scale = max(np.abs(e).max(), 1.0)
        err = np.abs(g - e).max()
        assert err <= atol * scale, f"{name}: error {err:.2e} (scale {scale:.1f})"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_layer_norm_kernel_equals_nn_layer_norm(shape):
    rng = np.random.RandomState(len(shape) + shape[-1])
    d = shape[-1]
    x = (rng.randn(*shape) * 3 + 5).astype(np.float32)  # a mean far from 0: the variance must not cancel
    params = {"gamma": rng.randn(d).astype(np.float32), "beta": rng.randn(d).astype(np.float32)}
    _compare(lambda: LayerNorm(d, epsilon=1e-6), x, 2e-6, ("y", "dx", "dgamma", "dbeta"), params)


class _AddNorm(nn.Cell):
    """x [2, ..] -> stack(x[0] + x[1], LayerNorm(x[0] + x[1])): the residual sum and its norm, both outputs
    in the loss, both summands' gradients in dx."""

    def __init__(self, d: int):
        super().__init__()
        self.norm = LayerNorm(d, epsilon=1e-6)
        self.use_kernels = self.norm.use_kernels

    def choose_kernels(self, plain: bool = False):
        self.norm.choose_kernels(plain)
        self.use_kernels = self.norm.use_kernels

    def construct(self, x):
        return ops.stack(self.norm(x[0], x[1]))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_residual_sum_and_layer_norm_kernel_equals_add_then_nn_layer_norm(shape):
    rng = np.random.RandomState(len(shape) + shape[-1] + 3)
    d = shape[-1]
    x = (rng.randn(2, *shape) * 3 + 5).astype(np.float32)
    params = {"gamma": rng.randn(d).astype(np.float32), "beta": rng.randn(d).astype(np.float32)}
    _compare(lambda: _AddNorm(d), x, 2e-6, ("sum and y", "d(a, r)", "dgamma", "dbeta"), params)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gelu_kernel_equals_the_erf_form(shape):
    rng = np.random.RandomState(shape[-1])
    x = (rng.randn(*shape) * 4).astype(np.float32)
    x.flat[:3] = (-12.0, 0.0, 12.0)[:x.size]  # the far tails and the kink
    _compare(lambda: GELU(approximate=False), x, 1e-6, ("y", "dx"))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_kernel_equals_ops_softmax(shape):
    rng = np.random.RandomState(shape[-1] + 1)
    x = (rng.randn(*shape) * 5).astype(np.float32)
    x.reshape(-1, shape[-1])[0] += 80.0  # exp of the first row's logits overflows unless its max is subtracted
    _compare(Softmax, x, 1e-6, ("y", "dx"))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scaled_softmax_kernel_equals_ops_softmax_of_the_scaled_input(shape):
    """The attention's Softmax(1/sqrt(head dim)), and a negative scale, whose maximum is the input's minimum."""
    rng = np.random.RandomState(shape[-1] + 2)
    x = (rng.randn(*shape) * 20).astype(np.float32)
    _compare(lambda: Softmax(0.125), x, 2e-6, ("y", "dx"))
    _compare(lambda: Softmax(-0.7), x, 2e-6, ("y", "dx"))


def test_float16_inputs_take_mindspore_ops():
    """The kernels are float32 only: a float16 input (amp O2/O3) runs MindSpore's op in the same cell."""
    fast, plain = _pair(lambda: GELU(approximate=False))
    x = ms.Tensor(np.linspace(-3, 3, 11).astype(np.float16))
    got = fast(x)
    assert got.dtype == ms.float16
    np.testing.assert_array_equal(got.asnumpy(), plain(x).asnumpy())
