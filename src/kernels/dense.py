"""nn.Dense that runs the own kernels on CPU (same parameters and names): the whole layer, product and
bias, forward and backward, on oneDNN's GEMM (csrc/gemm.h); where this MindSpore has no oneDNN loaded,
MindSpore's MatMul with the own bias kernel (MindSpore's CPU BiasAddGrad, the bias gradient of a linear
layer over tokens, is far slower than a column sum)."""
import ctypes
import logging

import mindspore as ms
from mindspore import nn

from .ops import _custom
from .switch import KernelCell, cpu_kernels_wanted, kernel_library

_GEMM = {}  # library path -> whether its GEMM found oneDNN in this process


def gemm_available() -> bool:
    """True when the kernel library's GEMM can run here (the oneDNN MindSpore's CPU backend loads);
    decided once per process, with one warning line when it cannot. The GEMM then shares a product
    among as many threads as MindSpore's runtime has (`runtime_num_threads`), as MindSpore's MatMul does."""
    library = kernel_library()
    if library not in _GEMM:
        lib = ctypes.CDLL(library)  # the same loaded library as MindSpore's ops call (one path, one copy)
        _GEMM[library] = bool(lib.CkGemmAvailable())
        lib.CkSetGemmThreads(int(ms.get_context("runtime_num_threads") or 1))
        if not _GEMM[library]:
            logging.getLogger(__name__).warning(
                "cpu_kernels: this MindSpore has no oneDNN sgemm (libdnnl.so.3); linear layers use its MatMul")
    return _GEMM[library]


def bias_add_op(library: str):
    """(x [.., D], b [D]) -> x + b; its gradient (dy, column sums of dy)."""
    backward = _custom(library, "BiasAddBackward", lambda dy, b: b, lambda dy, b: b)

    def bprop(x, b, out, dout):
        return dout, backward(dout, b)

    return _custom(library, "BiasAddForward", lambda x, b: x, lambda x, b: x, bprop)


def dense_op(library: str):
    """(x [.., K], w [N, K], b [N]) -> x w^T + b; its gradient (dx, dw, db) as one kernel."""
    backward = _custom(library, "DenseBackward", lambda dy, x, w: (x, w, w[:1]), lambda dy, x, w: (x, x, x))

    def bprop(x, w, b, out, dout):
        return backward(dout, x, w)

    return _custom(library, "DenseForward", lambda x, w, b: x[:-1] + [w[0]], lambda x, w, b: x, bprop)


class Gemm(KernelCell):
    """(x [.., K], w [N, K], b [N]) -> x w^T + b as the own GEMM kernel; a Dense's choice between that
    and MatMul with the bias kernel (a kind of its own in `bench.py --parts kernel_kinds`)."""

    def __init__(self):
        super().__init__()
        self.choose_kernels()

    def choose_kernels(self, plain: bool = False) -> None:
        super().choose_kernels(plain or not (cpu_kernels_wanted() and gemm_available()))

    def make_kernels(self, library: str) -> None:
        self.kernel = dense_op(library)

    def construct(self, x, w, b):
        return self.kernel(x, w, b)


class Dense(nn.Dense, KernelCell):
    """nn.Dense(in_features, out_features, has_bias)."""

    def __init__(self, in_features: int, out_features: int, has_bias: bool = True):
        super().__init__(in_features, out_features, has_bias=has_bias)
        self.gemm = Gemm()
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.bias_kernel = bias_add_op(library)

    def construct(self, x):
        if not (self.use_kernels and self.has_bias and x.dtype == ms.float32 and self.weight.dtype == ms.float32):
            return super().construct(x)
        if self.gemm.use_kernels:
            return self.gemm(x, self.weight, self.bias)
        shape = x.shape
        y = self.bias_kernel(self.matmul(x.reshape(-1, shape[-1]), self.weight), self.bias)
        return y.reshape(shape[:-1] + (self.out_channels,))
