"""Fewer glibc malloc arenas, so a long training run's resident memory stays flat, and the compiler's
freed memory handed back before the first step (why: docs/training.md "Memory levers").  MindSpore-free
and NumPy-free on purpose: glibc reads the limit only until a second arena is first needed, so train.py
sets it before anything starts threads; a MALLOC_ARENA_MAX in the environment is left as the user set it."""
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


def release_free_memory() -> bool:
    """Hand the heap's free pages back to the system (glibc's malloc_trim; True if it ran).

    Compiling a training graph allocates and frees hundreds of MiB of small objects; glibc keeps
    their pages, and MindSpore's memory pool, whose blocks are separate mappings, never reuses
    them, so the first step's tensors would come on top of them. Elsewhere than glibc: nothing."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
        return True
    except (OSError, AttributeError):  # not glibc (macOS, musl): no such call
        return False
