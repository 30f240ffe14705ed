"""Exponential moving average of the weights (timm's ModelEma, as the official recipe).

Every float parameter of the network -- BatchNorm running statistics included,
as timm averages the whole state dict -- gets a shadow copy named `ema.<name>`,
so the shadows are saved in the same checkpoint as the weights.
"""
import mindspore as ms
from mindspore import nn, ops


class EMA(nn.Cell):
    def __init__(self, params, decay: float):
        # auto_prefix=False: holding the network's parameters here must not rename them
        super().__init__(auto_prefix=False)
        self.decay = decay
        self.params = ms.ParameterTuple(params)
        self.shadows = self.params.clone(prefix="ema", init="same")

    def construct(self):
        updated = ()
        for shadow, param in zip(self.shadows, self.params):
            # shadow <- decay * shadow + (1 - decay) * param
            updated += (ops.assign(shadow, shadow * self.decay + param * (1.0 - self.decay)),)
        return updated

    def state(self) -> dict:
        """{model parameter name: EMA value} (host copies), to evaluate or save the EMA model."""
        return {p.name: s.asnumpy() for p, s in zip(self.params, self.shadows)}
