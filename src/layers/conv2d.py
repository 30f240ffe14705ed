"""Every convolution of the model, and the one place where CPU and GPU part ways.

`conv2d(...)` builds a `Conv2d`: an `nn.Conv2d` with PyTorch's explicit padding and the same
`weight`/`bias` parameters, so official checkpoints load unchanged. On CPU, where MindSpore hands
k x k and strided convolutions to a slow generic oneDNN kernel, it computes the same convolution as
space-to-depth, contiguous shifted slices and one 1x1 convolution over the columns; GPU and
exported graphs keep the plain `Conv2D` op (`set_plain_convs`, used by src/deploy/export.py). How
and why: docs/model.md "How it works: the CPU convolution".
"""
import mindspore as ms
from mindspore import nn, ops

from src.kernels import Transpose
from src.kernels.columns import Columns, shifted_columns


def cpu_formulation() -> bool:
    """The device decision, made once: the matmul formulation on CPU, the plain op elsewhere."""
    return ms.get_context("device_target") == "CPU"


def _cat_zeros(x, before: int, after: int, axis: int):
    """x with `before`/`after` zeros along `axis` (2 or 3), by one concatenation."""
    parts = [x]
    if before:
        shape = list(x.shape)
        shape[axis] = before
        parts = [ops.zeros(tuple(shape), x.dtype), x]
    if after:
        shape = list(x.shape)
        shape[axis] = after
        parts.append(ops.zeros(tuple(shape), x.dtype))
    return ops.cat(parts, axis) if len(parts) > 1 else x


def zero_pad(x, top: int, bottom: int, left: int, right: int):
    """Zero padding of the last two axes by concatenation, which is much faster than ops.pad (PadV3) on CPU."""
    return _cat_zeros(_cat_zeros(x, left, right, 3), top, bottom, 2)


def conv_as_matmul(x, weight, kernel_size: int, stride: int, padding: int, columns=None, space_to_depth=None):
    """ops.conv2d(x, weight, stride, padding) (groups 1, square kernel) as one 1x1 convolution over the
    columns: gathered by `columns` (src/kernels/columns.py) when it runs its kernel, else by contiguous
    shifted slices of the padded map after space-to-depth (`space_to_depth` a Transpose((0, 1, 3, 5, 2, 4))
    of src/kernels/transpose.py, for stride > 1)."""
    x = x.astype(weight.dtype)  # mixed precision (amp O2/O3) casts the weight, not always this input
    out_ch = weight.shape[0]
    if columns is not None and columns.uses_kernel(x):
        x = columns(x)  # (offset i, offset j, channel) order, as the weight below
        return ops.conv2d(x, weight.transpose(0, 2, 3, 1).reshape(out_ch, x.shape[1], 1, 1))
    b, c, h, w = x.shape
    k, s, p = kernel_size, stride, padding
    kk = (k + s - 1) // s  # kernel size after space-to-depth
    out_h, out_w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    rows, cols = out_h + kk - 1, out_w + kk - 1  # space-to-depth map the output needs
    bottom, right = rows * s - h - p, cols * s - w - p
    if bottom < 0:  # rows the convolution never reaches
        x = x[:, :, :h + bottom]
        bottom = 0
    if right < 0:
        x = x[:, :, :, :w + right]
        right = 0
    overrun = 1 if kk > 1 else 0  # the last offset's flat slice runs kk-1 values past the map
    x = zero_pad(x, p, bottom + overrun * s, p, right)
    rows += overrun
    if s > 1:
        x = space_to_depth(x.reshape(b, c, rows, s, cols, s)).reshape(b, c * s * s, rows, cols)
        pad_k = kk * s - k
        weight = zero_pad(weight, 0, pad_k, 0, pad_k).reshape(out_ch, c, kk, s, kk, s)
        weight = weight.transpose(0, 1, 3, 5, 2, 4).reshape(out_ch, c * s * s, kk, kk)
    x = x.reshape(b, c * s * s, rows, cols)
    if kk > 1:
        x = shifted_columns(x, kk)
        weight = weight.transpose(0, 2, 3, 1)  # (offset i, offset j, channel): the order of the columns
    # The product as a 1x1 convolution over the [B, K, out_h, width] columns: MindSpore's 1x1 Conv2D is a
    # plain matmul per image, while ops.matmul of a 2-D weight and a 3-D batch first broadcasts the
    # weight to [B, out_ch, K] (BroadcastTo is slow on CPU) and its gradient sums a [B, out_ch, K] tensor.
    depth = x.shape[1]
    x = x.astype(weight.dtype)  # under amp O2/O3 the space-to-depth cell returns float16
    y = ops.conv2d(x, weight.reshape(out_ch, depth, 1, 1))
    if y.shape[3] != out_w:  # the columns that wrap around the padded row
        y = y[:, :, :, :out_w]
    return y


class Conv2d(nn.Conv2d):
    """nn.Conv2d with PyTorch's symmetric padding; on CPU, k x k and strided convolutions
    run as `conv_as_matmul` (same parameters, same result)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, groups: int = 1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         pad_mode="pad" if padding else "valid", padding=padding,
                         group=groups, has_bias=bias)
        self.square = (kernel_size, stride, padding)
        self.space_to_depth = Transpose((0, 1, 3, 5, 2, 4)) if stride > 1 else None
        self.choose_formulation()
        self.columns = Columns(kernel_size, stride, padding) if kernel_size > 1 or stride > 1 else None

    def choose_formulation(self, plain: bool = False) -> None:
        """The matmul formulation where the device wants it and it applies (1x1 unstrided is a matmul already)."""
        k, s, _ = self.square
        self.as_matmul = not plain and cpu_formulation() and self.group == 1 and (k > 1 or s > 1)

    def construct(self, x):
        if not self.as_matmul:
            return super().construct(x)
        k, s, p = self.square
        y = conv_as_matmul(x, self.weight, k, s, p, self.columns, self.space_to_depth)
        if self.has_bias:
            y = ops.bias_add(y, self.bias)  # not a broadcast Add: see DropPath
        return y


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
           groups: int = 1, bias: bool = False) -> Conv2d:
    """A square convolution with PyTorch's explicit symmetric padding (MindSpore defaults to 'same')."""
    return Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups, bias)


def set_plain_convs(net: nn.Cell, plain: bool = True) -> nn.Cell:
    """Run every `Conv2d` in `net` as the plain op (export) or back to the device's choice."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, Conv2d):
            cell.choose_formulation(plain)
    return net
