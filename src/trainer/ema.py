"""Exponential moving average of the weights (timm's ModelEma, as the official recipe).
Every float parameter of the network -- BatchNorm running statistics included,
as timm averages the whole state dict -- gets a shadow copy named `ema.<name>`,
so the shadows are saved in the same checkpoint as the weights.
"""
import mindspore as ms
from mindspore import ops

from src.kernels.ops import in_place_op
from src.kernels.switch import KernelCell, all_float32

EMA_PREFIX = "ema"  # of the shadows' names in checkpoints: ema.conv1.weight
_update = ops.MultitypeFuncGraph("ema_update")


@_update.register("Number", "Tensor", "Tensor")
def _update_one(decay, shadow, param):
    """shadow <- decay * shadow + (1 - decay) * param"""
    return ops.assign(shadow, shadow * decay + param * (1.0 - decay))


class EMA(KernelCell):
    """On CPU with the own kernels (float32 parameters), one kernel updates every shadow in place;
    elsewhere MindSpore's ops, four per parameter."""

    def __init__(self, params, decay: float):
        # auto_prefix=False: holding the network's parameters here must not rename them
        super().__init__(auto_prefix=False)
        self.decay = decay
        self.params = ms.ParameterTuple(params)
        self.shadows = self.params.clone(prefix=EMA_PREFIX, init="same")
        # HyperMap, not a Python loop: graph mode unrolls a loop into nested calls, and the ~630
        # parameters of the full-size variants exceed its call depth limit of 1000
        self.hyper_map = ops.HyperMap()
        self.weights = ms.Tensor([decay, 1.0 - decay], ms.float32)
        self.choose_kernels(plain=not all_float32(self.params))

    def make_kernels(self, library: str) -> None:
        n = len(self.params)
        self.kernel = in_place_op(library, "EmaUpdate", [False] + [True] * n + [False] * n)

    def construct(self):
        if self.use_kernels:
            return self.kernel(self.weights, *self.shadows, *self.params)
        return self.hyper_map(ops.partial(_update, self.decay), self.shadows, self.params)

    def state(self) -> dict:
        """{model parameter name: EMA value} (host copies), to evaluate or save the EMA model."""
        return {p.name: s.asnumpy() for p, s in zip(self.params, self.shadows)}
