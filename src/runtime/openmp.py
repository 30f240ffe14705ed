"""One OpenMP thread unless the user chose otherwise: set before MindSpore is imported.

MindSpore loads libgomp when it is imported, and libgomp reads OMP_NUM_THREADS (and its wait
policy) only then. Nothing of MindSpore's own CPU kernels uses it, they run on MindSpore's thread
pool; the kernels that graph kernel fusion compiles (`graph_kernel_fusion`, AKG) do. Left unset,
each fused kernel starts a team on every core whose threads spin after it, beside MindSpore's
own threads on the same cores, and a train step runs several times slower (docs/training.md
"Memory levers"). So the entry points that read `graph_kernel_fusion` call this first thing.

MindSpore-free and NumPy-free on purpose (it must run before they are imported).
"""
import os

_SET_HERE = []  # the variable this process set, which a child that is not MindSpore must not inherit


def fusion_requested(argv) -> bool:
    """Whether a run with these arguments turns graph_kernel_fusion on: `--graph_kernel_fusion V` (or
    `=V`), else the key in the `--config` YAML; read before MindSpore and the config system are
    imported, so only for this one boolean. Runs without fusion keep libgomp's default, which
    trains faster than OMP_NUM_THREADS=1 without fusion."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg.startswith("--graph_kernel_fusion"):
            value = arg.split("=", 1)[1] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            return value.lower() in ("true", "1", "yes")
    for i, arg in enumerate(args):
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            args[i + 1] if arg == "--config" and i + 1 < len(args) else None)
        if path:
            import yaml  # PyYAML: MindSpore-free
            try:
                with open(path, encoding="utf-8") as f:
                    return (yaml.safe_load(f) or {}).get("graph_kernel_fusion") is True
            except (OSError, yaml.YAMLError, AttributeError):
                return False  # the config system reports a bad file in one line later
    return False


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
