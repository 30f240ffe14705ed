"""The columns of the CPU convolution formulation (src/layers/conv2d.py): the own kernel on CPU,
MindSpore's slices and concatenation elsewhere (and in exported graphs)."""
import mindspore as ms
from mindspore import ops

from .ops import _custom
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


def columns_op(library: str, kk: int, pad: int = 0):
    """The columns as one kernel, without the wrap-around ones: x [B, C, R, W] -> [B, kk * kk * C,
    R - kk, W - kk + 1] (a map padded before, with the flat slices' overrun row); with `pad`, of x
    with `pad` zeros on every side that the kernel reads without building them: [B, kk * kk * C,
    R + 2 pad - kk + 1, W + 2 pad - kk + 1]. Its gradient: one kernel that adds them back into place."""
    backward = _custom(library, "ColumnsBackward", lambda dcol, x: x, lambda dcol, x: x)

    def bprop(x, out, dout):
        return (backward(dout, x),)

    def out_shape(x):
        rows = x[2] + 2 * pad - kk + 1 if pad else x[2] - kk
        return [x[0], kk * kk * x[1], rows, x[3] + 2 * pad - kk + 1]

    return _custom(library, "ColumnsForward", out_shape, lambda x: x, bprop)


class Columns(KernelCell):
    """The columns of one convolution whose kernel size after space-to-depth is kk > 1: the kernel's
    (the valid columns only) on CPU, else `shifted_columns` (the caller crops what wraps around).
    `pad` > 0 (a stride-1 convolution's padding): `pads_itself` tells the caller when the kernel
    reads the padding itself, so the map is given unpadded."""

    def __init__(self, kk: int, pad: int = 0):
        super().__init__()
        self.kk, self.pad = kk, pad
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = columns_op(library, self.kk, self.pad)

    def pads_itself(self, x) -> bool:
        return self.pad > 0 and self.uses_kernel(x)

    def uses_kernel(self, x) -> bool:
        return self.use_kernels and x.dtype == ms.float32

    def construct(self, x):
        if self.uses_kernel(x):
            return self.kernel(x)
        return shifted_columns(x, self.kk)
