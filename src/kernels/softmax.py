"""Softmax of scale * x over the last axis, in float32: the own kernel on CPU, ops.softmax elsewhere."""
import numpy as np
import mindspore as ms
from mindspore import ops

from .ops import softmax_op
from .switch import KernelCell


class Softmax(KernelCell):
    """x -> softmax(x * scale) as float32. The kernel scales as it reads, so the scaled x is neither made
    nor kept for the backward pass; MindSpore's ops scale in x's dtype, then cast."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale
        self.scale_tensor = ms.Tensor(np.array([scale], np.float32))
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = softmax_op(library)

    def construct(self, x):
        if self.use_kernels and x.dtype == ms.float32:
            return self.kernel(x, self.scale_tensor)
        if self.scale != 1.0:
            x = x * self.scale
        return ops.softmax(x.astype(ms.float32), -1)
