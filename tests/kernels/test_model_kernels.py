"""The model with the own CPU kernels equals the model with MindSpore's ops (forward and the gradients
of a training loss), and an exported file holds MindSpore's portable ops, not the kernels."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.conformer import create_model
from src.deploy.export import export_model, load_mindir
from src.kernels import build, kernels_in_use, set_plain_kernels

ARCH = "conformer_reduced_patch16"
KERNEL_CELLS = 84


@pytest.fixture(scope="module")
def nets():
    """(kernels on, kernels off) with the same weights, drop path off."""
    ms.set_seed(3)
    np.random.seed(3)
    on = create_model(ARCH, num_classes=5, drop_path_rate=0.0)
    off = create_model(ARCH, num_classes=5, drop_path_rate=0.0)
    set_plain_kernels(off)
    ms.load_param_into_net(off, {p.name: ms.Parameter(p.data.copy(), name=p.name) for p in on.get_parameters()})
    # 9 LayerNorms, 5 GELUs, 3 softmaxes, 22 BatchNorms, the columns of 10 convolutions, 12 linear biases,
    # 19 transposes, the stem's max pool, 3 transformer blocks (their residual sums fused into the norms)
    assert kernels_in_use(on) == KERNEL_CELLS and kernels_in_use(off) == 0
    return on, off


def _images(batch: int) -> ms.Tensor:
    return ms.Tensor(np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32))


def test_forward_with_kernels_equals_mindspore_ops(nets):
    for net in nets:
        net.set_train(False)
    x = _images(3)
    for got, expected in zip(*(net(x) for net in nets)):
        got, expected = got.asnumpy(), expected.asnumpy()
        assert np.abs(got - expected).max() <= 1e-5 * max(np.abs(expected).max(), 1.0)


class _LossGrads(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.grad = ms.value_and_grad(self.loss, None, net.trainable_params())

    def loss(self, x, target):
        conv, trans = self.net(x)
        return ((conv - target) ** 2).mean() + ((trans - target) ** 2).mean()

    def construct(self, x, target):
        return self.grad(x, target)


def test_training_gradients_with_kernels_equal_mindspore_ops(nets):
    x, target = _images(4), ms.Tensor(np.eye(5, dtype=np.float32)[[0, 1, 2, 3]])
    results = []
    for net in nets:
        net.set_train(True)
        loss, grads = _LossGrads(net)(x, target)
        results.append((float(loss.asnumpy()), [g.asnumpy() for g in grads]))
    (loss_on, grads_on), (loss_off, grads_off) = results
    assert abs(loss_on - loss_off) <= 1e-5 * abs(loss_off)
    names = [p.name for p in nets[0].trainable_params()]
    for name, g_on, g_off in zip(names, grads_on, grads_off):
        scale = max(np.abs(g_off).max(), 1e-3)
        assert np.abs(g_on - g_off).max() <= 1e-4 * scale, name


def test_export_holds_mindspore_ops_and_gives_the_kernels_back(nets, tmp_path):
    net = nets[0]
    net.set_train(False)
    path = export_model(net, _images(2), str(tmp_path / "reduced"), "MINDIR")
    with open(path, "rb") as f:
        content = f.read()
    assert b"Custom" not in content and build.LIBRARY_NAME.encode() not in content
    assert kernels_in_use(net) == KERNEL_CELLS  # the trace switched them off, only for itself
    x = _images(2)
    for exported, ours in zip(load_mindir(path)(x), net(x)):
        np.testing.assert_allclose(exported.asnumpy(), ours.asnumpy(), atol=1e-5)
