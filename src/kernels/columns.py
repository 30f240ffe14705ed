"""The columns (im2col) of the CPU convolution formulation (src/layers/conv2d.py): one own kernel of
any kernel size, stride and padding on CPU; MindSpore's slices and concatenation of the
space-to-depth map elsewhere (and in exported graphs)."""
import mindspore as ms
from mindspore import ops

from .ops import _custom, output_size, window_tensor
from .switch import KernelCell


def shifted_columns(x, kk: int):
    """x [B, C, R, W] -> [B, kk * kk * C, R - kk, W]: of each channel's R * W values, the run of
    (R - kk) * W that starts at i * W + j, for the kernel offsets (i, j) in row-major order."""
    b, c, rows, cols = x.shape
    flat = x.reshape(b, c, rows * cols)
    length = (rows - kk) * cols
    parts = []
    for i in range(kk):
        for j in range(kk):
            parts.append(flat[:, :, i * cols + j:i * cols + j + length])
    return ops.cat(parts, 1).reshape(b, kk * kk * c, rows - kk, cols)


def columns_op(library: str):
    """(x [B, C, H, W], window_tensor(k, s, p)) -> the convolution's columns [B, k * k * C, out_h,
    out_w], offset-major (kernel offset (i, j), then channel). Its gradient: one kernel that adds them
    back into place."""
    backward = _custom(library, "ColumnsBackward", lambda dcol, x, window: x, lambda dcol, x, window: x)

    def bprop(x, window, out, dout):
        return backward(dout, x, window), ops.zeros_like(window)

    def out_shape(x, window):
        k, s, p = window[0], window[1], window[2] - 1
        return [x[0], k * k * x[1], output_size(x[2], k, s, p), output_size(x[3], k, s, p)]

    return _custom(library, "ColumnsForward", out_shape, lambda x, window: x, bprop)


class Columns(KernelCell):
    """The columns of one square convolution (kernel_size, stride, padding) as the own kernel, for
    float32 maps on CPU (`uses_kernel`); the caller takes MindSpore's formulation otherwise."""

    def __init__(self, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.window = window_tensor(kernel_size, stride, padding)
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = columns_op(library)

    def uses_kernel(self, x) -> bool:
        return self.use_kernels and x.dtype == ms.float32

    def construct(self, x):
        return self.kernel(x, self.window)
