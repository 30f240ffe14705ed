"""The CPU matmul formulation of k x k / strided convolutions equals MindSpore's Conv2D op, both ways
it gathers the columns: the own kernel (cpu_kernels on) and MindSpore's slices of the space-to-depth map.

Forward output and the gradients with respect to input, weight and bias are compared
on random inputs for every convolution shape the variants use, plus odd sizes that
exercise the cropping and padding paths.
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.conformer import create_model
from src.kernels import set_plain_kernels
from src.layers.conv2d import Conv2d, conv2d, set_plain_convs

# (in, out, kernel, stride, padding, height, width)
CASES = [
    (3, 16, 7, 2, 3, 64, 64),     # stem
    (3, 8, 7, 2, 3, 33, 47),      # stem on an odd, non-square input
    (16, 24, 4, 4, 0, 32, 32),    # trans_patch_conv, patch 16
    (16, 24, 8, 8, 0, 32, 32),    # trans_patch_conv, patch 32
    (16, 24, 4, 4, 0, 30, 35),    # patch conv whose input is not a multiple of the stride
    (8, 8, 3, 1, 1, 14, 14),      # bottleneck 3x3
    (8, 8, 3, 2, 1, 28, 28),      # first bottleneck of a stage
    (8, 8, 3, 2, 1, 15, 9),       # strided 3x3 on odd sizes
    (8, 16, 1, 2, 0, 28, 28),     # strided residual 1x1
    (8, 16, 1, 2, 0, 7, 9),
    (5, 6, 5, 3, 2, 17, 13),      # a shape the model does not use: the general path
]


class _Grads(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.grad = ms.grad(net, grad_position=0, weights=net.trainable_params())

    def construct(self, x, sens):
        return self.grad(x, sens)


class _Weighted(nn.Cell):
    """sum(conv(x) * sens): gradients seeded with a random cotangent, not ones."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def construct(self, x, sens):
        return (self.conv(x) * sens).sum()


def _forward_and_grads(conv, x, sens):
    out = conv(x).asnumpy()
    dx, dparams = _Grads(_Weighted(conv))(x, sens)
    return [out, dx.asnumpy(), *(d.asnumpy() for d in dparams)]


@pytest.mark.parametrize("kernels", [True, False], ids=["columns kernel", "MindSpore ops"])
@pytest.mark.parametrize("cin,cout,k,s,p,h,w", CASES)
def test_matmul_formulation_equals_conv2d(cin, cout, k, s, p, h, w, kernels, pynative):
    """In PyNative: a graph per case would be most of the test's time (the formulation in GRAPH mode: the
    model tests below and tests/kernels/test_model_kernels.py)."""
    rng = np.random.RandomState(k * 100 + s * 10 + h)
    fast = conv2d(cin, cout, k, stride=s, padding=p, bias=True)
    assert fast.as_matmul, "on CPU every k x k or strided convolution takes the matmul formulation"
    assert fast.columns.use_kernels
    if not kernels:
        set_plain_kernels(fast)
    plain = conv2d(cin, cout, k, stride=s, padding=p, bias=True)
    plain.choose_formulation(plain=True)
    plain.weight.set_data(fast.weight.data)
    plain.bias.set_data(ms.Tensor(rng.randn(cout).astype(np.float32)))
    fast.bias.set_data(plain.bias.data)
    x = ms.Tensor(rng.randn(2, cin, h, w).astype(np.float32))
    out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    sens = ms.Tensor(rng.randn(2, cout, out_h, out_w).astype(np.float32))
    expected = _forward_and_grads(plain, x, sens)
    got = _forward_and_grads(fast, x, sens)
    assert got[0].shape == (2, cout, out_h, out_w)
    for name, e, g in zip(("output", "d input", "d weight", "d bias"), expected, got):
        assert g.shape == e.shape, name
        err = np.abs(g - e).max() / max(np.abs(e).max(), 1e-6)
        assert err < 1e-5, f"{name}: relative error {err:.2e}"


def test_unstrided_1x1_keeps_the_plain_op_and_export_switch():
    assert not conv2d(8, 8, 1).as_matmul  # already a matmul in MindSpore's kernel
    net = create_model("conformer_reduced_patch16", num_classes=3)
    convs = [c for _, c in net.cells_and_names() if isinstance(c, Conv2d)]
    fast = [c for c in convs if c.as_matmul]
    assert {c.square[:2] for c in fast} == {(7, 2), (4, 4), (3, 1), (3, 2), (1, 2)}
    set_plain_convs(net, True)
    assert not any(c.as_matmul for c in convs)
    set_plain_convs(net, False)
    assert [c for c in convs if c.as_matmul] == fast


def test_model_output_same_with_either_formulation():
    ms.set_seed(0)
    net = create_model("conformer_reduced_patch16", num_classes=5)
    net.set_train(False)
    x = ms.Tensor(np.random.RandomState(1).randn(2, 3, 64, 96).astype(np.float32))
    fast = [t.asnumpy() for t in net(x)]
    plain_net = set_plain_convs(create_model("conformer_reduced_patch16", num_classes=5), True)
    plain_net.set_train(False)
    ms.load_param_into_net(plain_net, {p.name: p for p in net.get_parameters()})
    plain = [t.asnumpy() for t in plain_net(x)]
    for f, p in zip(fast, plain):
        assert np.abs(f - p).max() <= 1e-5 * max(1.0, np.abs(p).max())
