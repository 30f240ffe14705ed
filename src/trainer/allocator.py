"""Fewer glibc malloc arenas, so a long training run's resident memory stays flat (why:
docs/training.md "Memory levers").  MindSpore-free and NumPy-free on purpose: glibc
reads the limit only until a second arena is first needed, so train.py sets it before anything starts
threads; a MALLOC_ARENA_MAX in the environment is left as the user set it."""
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
