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
