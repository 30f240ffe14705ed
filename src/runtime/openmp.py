"""One OpenMP thread for runs with graph_kernel_fusion, unless the user chose otherwise: set before
MindSpore is imported, since libgomp reads OMP_NUM_THREADS only then (why: docs/training.md "Memory
levers"). MindSpore-free, so an entry point can call it once its config is parsed."""
import os

_SET_HERE = []  # the variable this process set, which a child that is not MindSpore must not inherit


def limit_openmp_threads() -> bool:
    """OMP_NUM_THREADS=1 unless already set (True if set here). NumPy's OpenBLAS falls back on
    OMP_NUM_THREADS when OPENBLAS_NUM_THREADS is unset, so that is set to what OpenBLAS would take
    by default, every core."""
    if "OMP_NUM_THREADS" in os.environ:
        return False
    os.environ["OMP_NUM_THREADS"] = "1"
    _SET_HERE.append("OMP_NUM_THREADS")
    if "OPENBLAS_NUM_THREADS" not in os.environ:
        os.environ["OPENBLAS_NUM_THREADS"] = str(os.cpu_count() or 1)
        _SET_HERE.append("OPENBLAS_NUM_THREADS")
    return True


def environment_for_others() -> dict:
    """The environment without what `limit_openmp_threads` set: for a child process of another
    runtime (the PyTorch worker, which would run on one thread)."""
    return {k: v for k, v in os.environ.items() if k not in _SET_HERE}
