"""Small ops written so that they match PyTorch exactly *and* export to ONNX/MINDIR.

MindSpore 2.10's exporter rejects `MaxPool(pad_mode='pad')`, `ops.pad`, nearest
`ops.interpolate` and `Erf` (tests/deploy/test_onnx_export.py exports the network built from
these), so each op here is rebuilt from primitives that do export.  None of them bakes the
batch size into a constant: every reshape keeps the batch dimension as -1, so an
exported graph can be given a dynamic batch dimension.
"""
import math

import mindspore as ms
from mindspore import nn, ops

from src.kernels.ops import gelu_op, max_pool_op, window_tensor
from src.kernels.switch import KernelCell

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
# Abramowitz & Stegun 7.1.26: erf(z) for z >= 0 with |error| <= 1.5e-7.
_AS_P = 0.3275911
_AS_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _erf_nonneg(z):
    """erf(z) for z >= 0 from Exp, Mul, Add and Div only (all exportable)."""
    denom = 1.0 + _AS_P * z
    t = ops.div(denom * 0 + 1.0, denom)  # a tensor numerator: `1.0 / x` lowers to Reciprocal, which won't export
    poly = _AS_A[4]
    for a in _AS_A[3::-1]:
        poly = poly * t + a
    return 1.0 - poly * t * ops.exp(-z * z)


class GELU(KernelCell):
    """GELU with torch.nn.GELU's two modes.

    approximate=False (the official numerics) is the exact erf form: on CPU the own kernel
    (src/kernels), elsewhere `ops.erf`, the fastest exact formulation of MindSpore's ops (faster
    than nn.GELU(approximate=False)) but one with no ONNX exporter, so `set_exportable` switches the
    cell to an erf polynomial accurate to 1.5e-7, used only for export.
    """

    def __init__(self, approximate: bool = False):
        super().__init__()
        self.approximate = approximate
        self.exportable = False
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = gelu_op(library)

    def uses_kernel(self, x) -> bool:
        return self.use_kernels and not self.approximate and not self.exportable and x.dtype == ms.float32

    def construct(self, x):
        if self.uses_kernel(x):
            return self.kernel(x)
        if self.approximate:
            # 0.5 * (1 + tanh(z)) == sigmoid(2z); MindSpore's CPU tanh is off by up to 1e-4, sigmoid by 7e-7
            return x * ops.sigmoid(2.0 * _SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
        if self.exportable:
            # x * erf(x / sqrt2) is even in x, so only erf on |x| is needed (no Sign op).
            ax = ops.abs(x)
            return 0.5 * (x + ax * _erf_nonneg(ax * _INV_SQRT2))
        return 0.5 * x * (1.0 + ops.erf(x * _INV_SQRT2))


def set_exportable(net: nn.Cell, exportable: bool = True) -> nn.Cell:
    """Switch every GELU in `net` to (or back from) its exportable formulation."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, GELU):
            cell.exportable = exportable
    return net


class TorchMaxPool2d(KernelCell):
    """nn.MaxPool2d(kernel_size, stride, padding=1) with PyTorch's padding semantics.

    On CPU the own kernel (src/kernels). Elsewhere, and in exported graphs: PyTorch pads with -inf;
    padding with a copy of the edge row/column gives the same maxima whenever kernel_size >= 2 (the
    copied value is already inside the window), and concatenation exports where `pad_mode='pad'`
    does not.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2):
        super().__init__()
        if kernel_size < 2:
            raise ValueError("TorchMaxPool2d needs kernel_size >= 2 for edge padding to equal -inf padding")
        self.kernel_size, self.stride = kernel_size, stride
        self.pool = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, pad_mode="valid")
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = max_pool_op(library)
        self.window = window_tensor(self.kernel_size, self.stride, 1)  # padding 1

    def construct(self, x):
        if self.use_kernels and x.dtype == ms.float32:
            return self.kernel(x, self.window)[0]
        x = ops.cat((x[:, :, :1], x, x[:, :, -1:]), axis=2)
        x = ops.cat((x[:, :, :, :1], x, x[:, :, :, -1:]), axis=3)
        return self.pool(x)


def pad_to_multiple(x, multiple: int):
    """Zeros at the bottom and right of a map [B, C, H, W] up to multiples of `multiple`, as mmcv's
    AdaptivePadding ('corner') in mmpretrain's Conformer; `x` itself, no op added, when H and W already are.

    The zeros come from a slice of `x` times 0, not ops.zeros: a zeros constant would carry the traced
    batch size into an exported graph (and ops.pad does not export).
    """
    _, _, h, w = x.shape
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h:
        x = ops.cat((x, ops.tile(x[:, :, -1:] * 0, (1, 1, pad_h, 1))), axis=2)
    if pad_w:
        x = ops.cat((x, ops.tile(x[:, :, :, -1:] * 0, (1, 1, 1, pad_w))), axis=3)
    return x


def upsample_nearest(x, scale: int):
    """F.interpolate(x, scale_factor=scale, mode='nearest') for an integer scale, via Tile."""
    if scale == 1:
        return x
    _, c, h, w = x.shape
    x = ops.tile(x.reshape(-1, c, h, 1, w, 1), (1, 1, 1, scale, 1, scale))
    return x.reshape(-1, c, h * scale, w * scale)
