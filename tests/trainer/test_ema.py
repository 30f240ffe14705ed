"""EMA: each update moves every shadow towards its parameter by (1 - decay), with the own kernel that
updates all shadows in place (one part or several threads' parts) and with MindSpore's ops."""
import numpy as np
import pytest
import mindspore as ms

from src.trainer.ema import EMA

SHAPES = [(3,), (5, 7), (1, 1, 9), (64, 3, 3, 3), (400, 400), (1,)]  # (400, 400): split over threads


@pytest.mark.parametrize("plain", [False, True], ids=["EmaUpdate", "MindSpore ops"])
def test_every_shadow_is_the_exponential_average_of_its_parameter(plain):
    rng = np.random.default_rng(0)
    params = [ms.Parameter(ms.Tensor(rng.standard_normal(s).astype(np.float32)), name=f"p{i}")
              for i, s in enumerate(SHAPES)]
    ema = EMA(params, decay=0.9)
    ema.choose_kernels(plain)
    assert ema.use_kernels == (not plain)
    expected = [p.asnumpy().copy() for p in params]
    for _ in range(3):
        for p in params:
            p.set_data(ms.Tensor(rng.standard_normal(p.shape).astype(np.float32)))
        ema()
        expected = [0.9 * e + 0.1 * p.asnumpy() for e, p in zip(expected, params)]
    state = ema.state()
    for p, value in zip(params, expected):
        np.testing.assert_allclose(state[p.name], value, rtol=1e-5, atol=1e-6, err_msg=p.name)
