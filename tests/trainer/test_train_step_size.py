"""The train step compiles for as many parameters as the full-size variants have (633 with BatchNorm
statistics, all of which EMA averages): graph mode unrolls a Python loop over parameters into nested
calls and stops at a call depth of 1000, so EMA and gradient accumulation must not loop in Python."""
import pytest
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.trainer.ema import EMA
from src.trainer.train_one_step import TrainOneStep

PARAMS = 640  # conformer_tiny/small/base: 633 with BatchNorm statistics, 463 trainable


class _ManyParams(nn.Cell):
    """x -> sum_i w_i * x: one small parameter per term."""

    def __init__(self):
        super().__init__()
        self.weights = ms.ParameterTuple(
            [ms.Parameter(ms.Tensor(np.full(2, i, np.float32)), name=f"w{i}") for i in range(PARAMS)])

        self.hyper_map = ops.HyperMap()

    def construct(self, x, target):
        total = ops.addn(self.hyper_map(ops.partial(ops.mul, x), self.weights))
        return ((total - target) ** 2).mean()


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_ema_and_accumulation_compile_for_hundreds_of_parameters():
    net = _ManyParams()
    ema = EMA(net.get_parameters(), decay=0.5)
    step = TrainOneStep(net, nn.SGD(net.trainable_params(), learning_rate=0.1), loss_scale=1.0,
                        clip_grad_norm=1.0, ema=ema, accumulation_steps=2)
    step.set_train(True)
    x, target = ms.Tensor(np.ones(2, np.float32)), ms.Tensor(np.zeros(2, np.float32))
    step.accumulate(x, target)
    _, applied, _ = step(x, target)
    assert bool(applied.asnumpy())
    updated = net.weights[3].asnumpy()
    assert (updated < 3).all()  # every weight moved towards the target
    np.testing.assert_allclose(ema.state()["w3"], 0.5 * 3 + 0.5 * updated, rtol=1e-6)
