"""Transpose by a fixed permutation: the own kernel on CPU, MindSpore's Transpose elsewhere.

MindSpore's CPU Transpose keeps a table of 8 bytes per output element for the life of the graph (and
its backward another); the kernel computes its offsets as it goes. Its backward is the same kernel
with the inverse permutation.
"""
import numpy as np
import mindspore as ms
from mindspore import ops

from .ops import _custom as custom_op
from .switch import KernelCell


def transpose_op(library: str, perm: tuple):
    """(x, perm as an int64 tensor) -> x transposed by `perm` (float32)."""
    inverse = tuple(int(i) for i in np.argsort(perm))

    def op(order, bprop=None):
        prim = custom_op(library, "TransposeForward", lambda x, p: [x[i] for i in order], lambda x, p: x, bprop)
        # Primitives that compare equal share their inferred shapes in the compiled graph: without the
        # permutation among its attributes, every transpose of one graph would take the first one's shape
        prim.add_prim_attr("permutation", list(order))
        return prim

    backward = op(inverse)
    inverse_tensor = ms.Tensor(np.array(inverse, np.int64))

    def bprop(x, p, out, dout):
        return backward(dout, inverse_tensor), ops.zeros_like(p)

    return op(perm, bprop)


class Transpose(KernelCell):
    """x -> x.transpose(*perm) for inputs of len(perm) axes."""

    def __init__(self, perm: tuple):
        super().__init__()
        self.perm = tuple(perm)
        self.perm_tensor = ms.Tensor(np.array(self.perm, np.int64))
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = transpose_op(library, self.perm)

    def construct(self, x):
        if self.use_kernels and x.dtype == ms.float32:
            return self.kernel(x, self.perm_tensor)
        return ops.transpose(x, self.perm)
