"""The malloc arena cap train.py sets first thing (src/trainer/allocator.py)."""
import os
import subprocess
import sys

import pytest

from conftest import REPO

PROBE = ("import sys; sys.path.insert(0, {repo!r}); from src.trainer.allocator import limit_malloc_arenas; "
         "print(limit_malloc_arenas(), 'numpy' in sys.modules, 'mindspore' in sys.modules)")


def _probe(env):
    out = subprocess.run([sys.executable, "-c", PROBE.format(repo=REPO)], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def _glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # no such name outside glibc
        return False


@pytest.mark.skipif(not _glibc(), reason="the arena cap is glibc's")
def test_arena_cap_is_set_before_numpy_or_mindspore_and_leaves_a_user_setting_alone():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _probe(env) == ["True", "False", "False"]  # set, and importing it started no threads
    assert _probe(dict(env, MALLOC_ARENA_MAX="4"))[0] == "False"


TRIM_PROBE = """
import ctypes, sys
sys.path.insert(0, {repo!r})
from src.trainer.allocator import release_free_memory

def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024

libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks = [libc.malloc(4000) for _ in range(60000)]  # ~230 MiB of small chunks, as a compiler leaves them
for b in blocks:
    ctypes.memset(b, 1, 4000)
keep = blocks[-1]  # one live chunk at the top: glibc cannot shrink the heap past it by itself
for b in blocks[:-1]:
    libc.free(b)
before = rss_mib()
print(release_free_memory(), before - rss_mib())
"""


@pytest.mark.skipif(not _glibc(), reason="malloc_trim is glibc's")
def test_released_free_memory_leaves_the_process():
    """Freed small chunks below a live one stay resident until release_free_memory hands them back."""
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE.format(repo=REPO)], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "True"
    assert float(out[1]) > 150, f"only {out[1]} MiB released"
