"""The own bias kernel of Dense equals nn.Dense: forward and the gradients of input, weight and bias,
under ms.grad, over odd sizes (one row to 3 x 677 rows, 1 to 517 features)."""
import numpy as np
import pytest
import mindspore as ms

from src.kernels.dense import Dense
from weighted_sum import SumGrads

# PyNative: each case would otherwise compile its own graphs, which is most of their time; the kernels in
# GRAPH mode, every kind, forward and training gradients: tests/kernels/test_model_kernels.py
pytestmark = pytest.mark.usefixtures("pynative")

# (input shape, out features)
CASES = [((1, 7), 1), ((3, 5, 193), 31), ((2, 384), 1536), ((3, 677, 517), 96), ((64, 5, 192), 576)]


def _compare(plain, fast, plain_dense, fast_dense, shape, out, rng, atol: float) -> tuple:
    """The same weights in both; (results of plain, of fast, sens): output, dx, dweight, dbias."""
    for name in ("weight", "bias"):
        value = ms.Tensor(rng.randn(*getattr(fast_dense, name).shape).astype(np.float32))
        getattr(fast_dense, name).set_data(value)
        getattr(plain_dense, name).set_data(value)
    x = ms.Tensor(rng.randn(*shape).astype(np.float32))
    sens = ms.Tensor(rng.randn(*shape[:-1], out).astype(np.float32))
    results = []
    for cell in (plain, fast):
        dx, (dweight, dbias) = SumGrads(cell)(x, sens)
        results.append([cell(x).asnumpy(), dx.asnumpy(), dweight.asnumpy(), dbias.asnumpy()])
    for name, e, g in zip(("y", "dx", "dweight", "dbias"), *results):
        assert g.shape == e.shape, name
        scale = max(np.abs(e).max(), 1.0)
        err = np.abs(g - e).max()
        assert err <= atol * scale, f"{name}: error {err:.2e} (scale {scale:.1f})"
    return results[0], results[1], sens


@pytest.mark.parametrize("shape,out", CASES, ids=str)
def test_dense_bias_kernel_equals_nn_dense(shape, out):
    fast, plain = Dense(shape[-1], out), Dense(shape[-1], out)
    plain.choose_kernels(plain=True)
    assert fast.use_kernels and not plain.use_kernels
    # dbias sums up to 2031 rows: MindSpore's float sum is off the exact one by ~1e-6 of the scale
    expected, got, sens = _compare(plain, fast, plain, fast, shape, out, np.random.RandomState(shape[-1] + out), 2e-6)
    exact = sens.asnumpy().astype(np.float64).reshape(-1, out).sum(0)
    assert np.abs(got[3] - exact).max() <= np.abs(expected[3] - exact).max() + 1e-6 * np.abs(exact).max()


@pytest.mark.parametrize("shape,out", CASES, ids=str)
def test_dense_with_gelu_kernel_equals_nn_dense_then_gelu(shape, out):
    """fc1 then the exact GELU: the bias and the GELU as one kernel, against nn.Dense then the GELU cell's
    MindSpore formulation (erf), forward and the gradients of input, weight and bias."""
    from mindspore import nn
    from src.layers.exportable_ops import GELU

    class DenseGelu(nn.Cell):
        def __init__(self, plain: bool):
            super().__init__()
            self.fc, self.act = Dense(shape[-1], out), GELU(approximate=False)
            if plain:
                self.fc.choose_kernels(plain=True)
                self.act.choose_kernels(plain=True)

        def construct(self, x):  # as Mlp (src/layers/mlp.py)
            if self.fc.uses_kernel(x) and self.act.uses_kernel(x):
                return self.fc(x, True)
            return self.act(self.fc(x))

    fast, plain = DenseGelu(False), DenseGelu(True)
    expected, _, _ = _compare(plain, fast, plain.fc, fast.fc, shape, out, np.random.RandomState(shape[-1] * 3 + out),
                              3e-6)
    assert (expected[0] < 0).mean() > 0.02  # inputs in GELU's curved, negative part too
