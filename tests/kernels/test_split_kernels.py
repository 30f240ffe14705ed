"""A kernel with enough work splits it over threads (src/kernels/csrc/kernel.h: parallel_for): split in
three (CONFORMER_KERNEL_THREADS=3, more parts than this machine's cores) it gives what it gives on the
calling thread alone, forward and every gradient, at sizes that split. (Each kernel against MindSpore's
op: the other tests of this folder.)"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.kernels import LayerNorm, Softmax, Transpose
from src.kernels.batch_norm import BatchNorm2d
from src.kernels.columns import Columns
from src.kernels.dense import Dense
from src.layers.exportable_ops import GELU, TorchMaxPool2d
from weighted_sum import SumGrads

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

class _DenseGelu(nn.Cell):
    """fc1 and its GELU as the MLP runs them on CPU: one kernel after the product."""

    def __init__(self):
        super().__init__()
        self.fc = Dense(48, 1031)
        self.use_kernels = self.fc.use_kernels

    def construct(self, x):
        return self.fc(x, True)


# (cell, input shape): each well above the quarter million values below which a kernel does not split
CASES = {
    "LayerNorm": (lambda: LayerNorm(384, epsilon=1e-6), (3, 333, 384)),
    "GELU": (lambda: GELU(approximate=False), (5, 77, 1031)),
    "Softmax": (lambda: Softmax(0.125), (3, 6, 97, 197)),
    "BatchNorm2d": (lambda: BatchNorm2d(24, eps=1e-5, momentum=0.9), (5, 24, 47, 53)),
    "BatchNorm2d+ReLU": (lambda: BatchNorm2d(24, eps=1e-5, momentum=0.9, relu=True), (5, 24, 47, 53)),
    "TorchMaxPool2d": (lambda: TorchMaxPool2d(3, 2), (3, 17, 61, 58)),
    "Columns 7x7/2": (lambda: Columns(7, 2, 3), (3, 3, 67, 65)),
    "Columns 3x3/1": (lambda: Columns(3, 1, 1), (2, 21, 40, 37)),
    "Dense (its bias)": (lambda: Dense(48, 1031), (7, 97, 48)),
    "Dense (its bias) + GELU": (lambda: _DenseGelu(), (7, 97, 48)),
    "Transpose, runs": (lambda: Transpose((0, 2, 1, 3)), (5, 97, 18, 64)),
    "Transpose, tiles": (lambda: Transpose((0, 2, 3, 1)), (5, 64, 29, 31)),
}


def _run(cell, x, sens, threads: str, monkeypatch) -> list:
    monkeypatch.setenv("CONFORMER_KERNEL_THREADS", threads)
    grads = SumGrads(cell)(x, sens)
    grads = [grads[0], *grads[1]] if isinstance(grads, tuple) else [grads]
    return [cell(x).asnumpy(), *(g.asnumpy() for g in grads)]


@pytest.mark.parametrize("name", CASES)
def test_split_kernel_equals_one_thread(name, monkeypatch):
    make, shape = CASES[name]
    cell = make()
    assert cell.use_kernels
    cell.set_train(True)
    rng = np.random.RandomState(len(name))
    x = ms.Tensor((rng.randn(*shape) * 2 + 1).astype(np.float32))
    sens = ms.Tensor(rng.randn(*cell(x).shape).astype(np.float32))
    alone, split = _run(cell, x, sens, "1", monkeypatch), _run(cell, x, sens, "3", monkeypatch)
    assert len(alone) == len(split) >= 2
    for k, (a, s) in enumerate(zip(alone, split)):
        # LayerNorm's dgamma, dbeta and the bias gradient: each part's column sums, added up at the end
        if (name == "LayerNorm" and k >= 2) or (name.startswith("Dense") and k >= 2):
            np.testing.assert_allclose(s, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())
        else:
            np.testing.assert_array_equal(s, a)
