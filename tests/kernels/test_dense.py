"""The own Dense kernels equal nn.Dense: the whole layer on the GEMM kernel, and MatMul with the bias
kernel (where the GEMM cannot run), forward and the gradients of input, weight and bias, in GRAPH
mode under ms.grad, over odd sizes (one row to 3 x 677 rows, 1 to 1536 features), the big ones
shared among threads in uneven blocks."""
import ctypes

import numpy as np
import pytest
import mindspore as ms

from src.kernels import dense
from src.kernels.build import kernel_library
from src.kernels.dense import Dense
from weighted_sum import SumGrads

# (input shape, out features)
CASES = [((1, 7), 1), ((3, 5, 193), 31), ((2, 384), 1536), ((3, 677, 517), 96), ((64, 5, 192), 576),
         ((2, 197, 384), 1152)]


def _results(fast, shape, out, rng):
    plain = Dense(shape[-1], out)
    plain.choose_kernels(plain=True)
    assert not plain.use_kernels
    for name in ("weight", "bias"):
        value = ms.Tensor(rng.randn(*getattr(fast, name).shape).astype(np.float32))
        getattr(fast, name).set_data(value)
        getattr(plain, name).set_data(value)
    x = ms.Tensor(rng.randn(*shape).astype(np.float32))
    sens = ms.Tensor(rng.randn(*shape[:-1], out).astype(np.float32))
    results = []
    for cell in (plain, fast):
        dx, (dweight, dbias) = SumGrads(cell)(x, sens)
        results.append([cell(x).asnumpy(), dx.asnumpy(), dweight.asnumpy(), dbias.asnumpy()])
    return results, sens.asnumpy()


def _check(results, sens, out):
    for name, e, g in zip(("y", "dx", "dweight", "dbias"), *results):
        assert g.shape == e.shape, name
        scale = max(np.abs(e).max(), 1.0)
        err = np.abs(g - e).max()
        # dbias sums up to 2031 rows: MindSpore's float sum is off the exact one by ~1e-6 of the scale
        assert err <= 2e-6 * scale, f"{name}: error {err:.2e} (scale {scale:.1f})"
    exact = sens.astype(np.float64).reshape(-1, out).sum(0)
    assert np.abs(results[1][3] - exact).max() <= np.abs(results[0][3] - exact).max() + 1e-6 * np.abs(exact).max()


@pytest.mark.parametrize("gemm", [True, False], ids=["gemm", "matmul_bias"])
@pytest.mark.parametrize("shape,out", CASES, ids=str)
def test_dense_kernels_equal_nn_dense(shape, out, gemm):
    fast = Dense(shape[-1], out)
    fast.gemm.choose_kernels(plain=not gemm)
    assert fast.use_kernels and fast.gemm.use_kernels == gemm
    results, sens = _results(fast, shape, out, np.random.RandomState(shape[-1] + out))
    _check(results, sens, out)


@pytest.mark.parametrize("threads", [1, 3])
def test_gemm_gives_the_same_layer_on_any_number_of_threads(threads):
    """Three threads split 2031 rows (and the weight gradient's 96) into blocks none of which is whole."""
    library = ctypes.CDLL(kernel_library())
    try:
        library.CkSetGemmThreads(threads)
        fast = Dense(517, 96)
        results, sens = _results(fast, (3, 677, 517), 96, np.random.RandomState(threads))
    finally:
        library.CkSetGemmThreads(int(ms.get_context("runtime_num_threads") or 1))
    _check(results, sens, 96)


def test_without_onednn_the_layer_keeps_matmul_with_the_bias_kernel(monkeypatch):
    monkeypatch.setitem(dense._GEMM, kernel_library(), False)
    layer = Dense(7, 5)
    assert layer.use_kernels and not layer.gemm.use_kernels
    results, sens = _results(layer, (4, 7), 5, np.random.RandomState(0))
    _check(results, sens, 5)
