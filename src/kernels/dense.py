"""nn.Dense whose bias runs the own kernel on CPU (same parameters and names): MindSpore's CPU
BiasAddGrad, the bias gradient of a linear layer over tokens, is far slower than a column sum. Followed
by an exact GELU (`self(x, True)`), the bias and the GELU are one kernel each way."""
import mindspore as ms
from mindspore import nn

from .ops import _custom
from .switch import KernelCell


def bias_add_op(library: str):
    """(x [.., D], b [D]) -> x + b; its gradient (dy, column sums of dy)."""
    backward = _custom(library, "BiasAddBackward", lambda dy, b: b, lambda dy, b: b)

    def bprop(x, b, out, dout):
        return dout, backward(dout, b)

    return _custom(library, "BiasAddForward", lambda x, b: x, lambda x, b: x, bprop)


def bias_gelu_op(library: str):
    """(x [.., D], b [D]) -> GELU(x + b), exact; its gradient recomputes x + b."""
    backward = _custom(library, "BiasGeluBackward", lambda x, b, dy: (x, b), lambda x, b, dy: (x, b))

    def bprop(x, b, out, dout):
        return backward(x, b, dout)

    return _custom(library, "BiasGeluForward", lambda x, b: x, lambda x, b: x, bprop)


class Dense(nn.Dense, KernelCell):
    """nn.Dense(in_features, out_features, has_bias)."""

    def __init__(self, in_features: int, out_features: int, has_bias: bool = True):
        super().__init__(in_features, out_features, has_bias=has_bias)
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.bias_kernel = bias_add_op(library)
        self.bias_gelu_kernel = bias_gelu_op(library)

    def uses_kernel(self, x) -> bool:
        return self.use_kernels and self.has_bias and x.dtype == ms.float32 and self.weight.dtype == ms.float32

    def _product_then(self, kernel, x):
        shape = x.shape
        y = kernel(self.matmul(x.reshape(-1, shape[-1]), self.weight), self.bias)
        return y.reshape(shape[:-1] + (self.out_channels,))

    def construct(self, x, with_gelu: bool = False):
        """self(x); with `with_gelu` (only where `uses_kernel(x)`), its exact GELU, the bias and the GELU as one
        kernel. A call of the cell either way, so forward hooks see the layer."""
        if with_gelu:
            return self._product_then(self.bias_gelu_kernel, x)
        if not self.uses_kernel(x):
            return super().construct(x)
        return self._product_then(self.bias_kernel, x)
