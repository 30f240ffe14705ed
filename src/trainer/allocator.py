"""Fewer glibc malloc arenas, so a long training run's resident memory stays flat.

glibc gives each thread that allocates concurrently its own arena, up to 8 per core. Training
runs many allocating threads (MindSpore's kernel and pipeline threads, the data workers, a new
set of pipeline threads every epoch), and memory freed in one arena is not reused by the others
nor returned to the system while anything in its heap is live: resident memory then creeps up
every epoch (tools/soak.py measures it; docs/benchmark.md). The limit is set
with mallopt, which glibc reads only until a second arena is first needed: so before anything
starts threads (importing NumPy or MindSpore does), i.e. first thing in train.py. A
MALLOC_ARENA_MAX in the environment is left as the user set it. Elsewhere than glibc: nothing.

MindSpore-free and NumPy-free on purpose (it must run before they are imported).
"""
import ctypes
import ctypes.util
import os

ARENAS = 2
_M_ARENA_MAX = -8  # glibc malloc.h


def limit_malloc_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at `arenas` (True if set here)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # not glibc (macOS, musl): no such knob
        return False
