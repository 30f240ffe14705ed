"""nn.LayerNorm over the last axis that runs the own kernel on CPU (same parameters, same names)."""
import numpy as np
import mindspore as ms
from mindspore import nn

from .ops import add_layer_norm_op, layer_norm_op
from .switch import KernelCell


class LayerNorm(nn.LayerNorm, KernelCell):
    """nn.LayerNorm((dim,), epsilon): gamma and beta as nn.LayerNorm's, so checkpoints load unchanged."""

    def __init__(self, dim: int, epsilon: float):
        super().__init__((dim,), epsilon=epsilon)
        self.eps_tensor = ms.Tensor(np.array([epsilon], np.float32))
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = layer_norm_op(library)
        self.add_kernel = add_layer_norm_op(library)

    def construct(self, x, residual=None):
        """self(x) -> LayerNorm(x); self(x, residual) -> (x + residual, LayerNorm(x + residual)), on CPU the
        sum and the norm as one kernel each way (a pre-norm block's residual sum, then its next norm)."""
        kernel = self.use_kernels and x.dtype == ms.float32
        if residual is None:
            return self.kernel(x, self.gamma, self.beta, self.eps_tensor)[0] if kernel else super().construct(x)
        if kernel and residual.dtype == ms.float32:
            out = self.add_kernel(x, residual, self.gamma, self.beta, self.eps_tensor)
            return out[0], out[1]
        x = x + residual
        return x, super().construct(x)
