"""The 1x1 unstrided convolution (no bias) in which every convolution of the model ends, on the own
GEMM kernels on CPU (csrc/pointwise.cc), ops.conv2d elsewhere (and in exported graphs)."""
import mindspore as ms
from mindspore import ops

from .gemm import GemmCell
from .ops import _custom


def pointwise_op(library: str):
    """(x [B, C_in, H, W], w [C_out, C_in]) -> y [B, C_out, H, W]; its gradient (dx, dw) as one kernel."""
    backward = _custom(library, "PointwiseBackward", lambda dy, x, w: (x, w), lambda dy, x, w: (x, x))

    def bprop(x, w, out, dout):
        return backward(dout, x, w)

    return _custom(library, "PointwiseForward", lambda x, w: [x[0], w[0], x[2], x[3]], lambda x, w: x, bprop)


class Pointwise(GemmCell):
    """(x [B, C_in, H, W], w [C_out, C_in, 1, 1]) -> ops.conv2d(x, w)."""

    def __init__(self):
        super().__init__()
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = pointwise_op(library)

    def construct(self, x, w):
        if self.use_kernels and x.dtype == ms.float32 and w.dtype == ms.float32:
            return self.kernel(x, w.reshape(w.shape[0], w.shape[1]))
        return ops.conv2d(x, w)
