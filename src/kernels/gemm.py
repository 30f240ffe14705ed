"""Whether the kernels on oneDNN's GEMM (csrc/gemm.h: Dense, Pointwise) can run in this process, and
the base of the cells that use them."""
import ctypes
import logging

import mindspore as ms

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
                "cpu_kernels: this MindSpore has no oneDNN sgemm (libdnnl.so.3); linear layers and "
                "convolutions use its MatMul and Conv2D")
    return _GEMM[library]


class GemmCell(KernelCell):
    """A KernelCell whose kernel needs the GEMM: MindSpore's op also where oneDNN is not loaded."""

    def choose_kernels(self, plain: bool = False) -> None:
        super().choose_kernels(plain or not (cpu_kernels_wanted() and gemm_available()))
