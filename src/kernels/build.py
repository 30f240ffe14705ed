"""Compile the C++ kernels in csrc/ once per machine into the kernel cache and find the library.

The library is built with the compiler's own flags for this CPU (-march=native), so it is kept
under a key made of the sources, the compiler's version, the flags and the CPU's feature flags: a
cache folder shared by different machines (a network home, a container image) never hands a
library to a CPU that lacks one of its instructions (that would die with SIGILL). Processes that
start at once (msrun ranks, pytest-xdist workers) take a file lock, so one builds and the others
wait for it; the library appears by an atomic rename. No compiler, a failed build or an unwritable
cache is one warning line, after which the model uses MindSpore's own ops.

`python -m src.kernels` builds the library ahead of time (the Makefile's venv step) and prints its
path. This module imports no MindSpore.
"""
import fcntl
import glob
import hashlib
import logging
import os
import platform
import shlex
import subprocess
import sys

from src.io import replacing, user_cache_folder

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
LIBRARY_NAME = "libconformer_kernels.so"
# -fopenmp-simd: the `omp simd` reductions vectorise without linking an OpenMP runtime
CXXFLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC")
CACHE_ENV = "CONFORMER_KERNEL_CACHE"
COMPILE_SECONDS = 300

_BUILT = {}  # key -> library path, or None once a build failed in this process


def compiler() -> list:
    """The C++ compiler command: $CXX (which may carry options), else g++."""
    return shlex.split(os.environ.get("CXX") or "g++")


def kernel_cache() -> str:
    """Where built kernels are kept: $CONFORMER_KERNEL_CACHE, else the user's cache folder."""
    return os.environ.get(CACHE_ENV) or user_cache_folder("kernels")


def sources() -> list:
    return sorted(glob.glob(os.path.join(CSRC, "*.cc")) + glob.glob(os.path.join(CSRC, "*.h")))


def cpu_features() -> str:
    """The CPU's model and feature flags as the kernel sees them (/proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.startswith(("flags", "Features", "model name", "vendor_id"))]
        # the first processor's lines; every core of one machine reports the same
        seen, first = set(), []
        for line in lines:
            field = line.split(":", 1)[0].strip()
            if field not in seen:
                seen.add(field)
                first.append(line.strip())
        return "\n".join(first)
    except OSError:
        return f"{platform.machine()} {platform.processor()}"


def compiler_version(cmd: list) -> str:
    """The first line of `CXX --version`; raises OSError when there is no such compiler."""
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise OSError(f"{cmd[0]} --version did not answer") from None
    if out.returncode != 0:
        raise OSError(f"{cmd[0]} --version failed")
    return (out.stdout.splitlines() or [""])[0]


def cache_key(cmd: list, version: str) -> str:
    digest = hashlib.sha256()
    for path in sources():
        digest.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    for part in (" ".join(cmd), version, " ".join(CXXFLAGS), cpu_features()):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:20]


def _compile(cmd: list, target: str) -> None:
    """Build the library at `target` (atomically); raises RuntimeError with the compiler's first error."""
    with replacing(target, suffix=".so") as tmp:
        units = [path for path in sources() if path.endswith(".cc")]
        try:
            out = subprocess.run([*cmd, *CXXFLAGS, "-o", tmp, *units], capture_output=True, text=True,
                                 timeout=COMPILE_SECONDS)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{cmd[0]} took over {COMPILE_SECONDS} s") from None
        if out.returncode != 0:
            errors = [line for line in out.stderr.splitlines() if "error" in line] or out.stderr.splitlines()
            raise RuntimeError(f"{cmd[0]} failed: {(errors or ['no message'])[0].strip()}")
        os.chmod(tmp, 0o755)


def build_library() -> str:
    """The path of the kernel library for this machine, built now if the cache has none.

    Raises OSError (no compiler, unwritable cache) or RuntimeError (a failed compile, WriteError)."""
    cmd = compiler()
    key = cache_key(cmd, compiler_version(cmd))
    folder = os.path.join(kernel_cache(), key)
    target = os.path.join(folder, LIBRARY_NAME)
    if os.path.isfile(target):
        return target
    os.makedirs(folder, exist_ok=True)
    # flock is released by the kernel when its holder dies, so a killed build never blocks the next one
    with open(os.path.join(folder, ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.isfile(target):  # another process may have built it while this one waited
            _compile(cmd, target)
    return target


def kernel_library():
    """The kernel library's path, or None (after one warning line) when it cannot be built.

    Decided once per process and compiler: every later call returns the same answer at once."""
    memo = os.environ.get("CXX", "")
    if memo not in _BUILT:
        try:
            _BUILT[memo] = build_library()
        except (OSError, RuntimeError) as e:  # WriteError is a RuntimeError
            _BUILT[memo] = None
            logging.getLogger(__name__).warning(
                "cpu_kernels: cannot build the CPU kernels (%s); using MindSpore's own ops", str(e).splitlines()[0])
    return _BUILT[memo]


def main() -> int:
    try:
        path = build_library()
    except (OSError, RuntimeError) as e:  # WriteError is a RuntimeError
        print(f"CPU kernels not built ({e}); the model will use MindSpore's own ops", file=sys.stderr)
        return 0  # not an error of the set-up: the plain ops work
    print(path)
    return 0
