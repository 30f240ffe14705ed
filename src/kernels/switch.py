"""Whether the model's cells run the own CPU kernels: the `cpu_kernels` key, the device, the build.

As the CPU convolution formulation (src/layers/conv2d.py), the decision is made when a cell is
built: on CPU, with `cpu_kernels` on and the library built (src/kernels/build.py), a cell that
has a kernel (KernelCell) calls it; elsewhere (GPU, Ascend, float16 inputs, any amp_level but O0) it runs
MindSpore's op. An exported graph must run anywhere, so export switches every such cell to the
plain op for the trace (`set_plain_kernels`).
"""
import mindspore as ms
from mindspore import nn

from .build import kernel_library

_ENABLED = [True]


def set_cpu_kernels(on: bool) -> None:
    """`cpu_kernels` for the cells built after this call (src/runtime/device.py: init_context)."""
    _ENABLED[0] = bool(on)


def cpu_kernels_wanted() -> bool:
    """True when a cell built now should run the own kernels: CPU, switched on, library built."""
    return _ENABLED[0] and ms.get_context("device_target") == "CPU" and kernel_library() is not None


def all_float32(tensors) -> bool:
    """True when every tensor is float32, the only dtype the own kernels take."""
    return all(t.dtype == ms.float32 for t in tensors)


class KernelCell(nn.Cell):
    """A cell with a kernel formulation and a plain one; subclasses make their ops in `make_kernels`
    and test `self.use_kernels` in construct."""

    def choose_kernels(self, plain: bool = False) -> None:
        self.use_kernels = not plain and cpu_kernels_wanted()
        if self.use_kernels and not getattr(self, "kernels_made", False):
            self.make_kernels(kernel_library())
            self.kernels_made = True

    def make_kernels(self, library: str) -> None:
        raise NotImplementedError


def set_plain_kernels(net: nn.Cell, plain: bool = True) -> nn.Cell:
    """Every KernelCell in `net` to MindSpore's op (export) or back to the device's choice."""
    for _, cell in net.cells_and_names():
        if isinstance(cell, KernelCell):
            cell.choose_kernels(plain)
    return net


def kernels_in_use(net: nn.Cell) -> int:
    """How many cells of `net` run an own kernel (0: MindSpore's ops throughout)."""
    return sum(1 for _, cell in net.cells_and_names() if isinstance(cell, KernelCell) and cell.use_kernels)
