"""Shared test setup: repository on sys.path, MindSpore in GRAPH mode on CPU, the e2e marker.

The folders mirror src/ (tests/layers, data, trainer, deploy, convert, runtime; tests/dev for the
developer tools in tools/).  Tests that run the scripts as subprocesses, train a model or compile a
full-size variant carry `e2e`: `pytest tests -m "not e2e"` is the fast unit part, `make test` runs
everything.
"""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
sys.path.insert(0, REPO)


# The test files that take longest, longest first (docs/development.md, "Tests"): they run before all
# others, so under `--dist loadfile` the two workers start on the long files and end on the short ones
# together, instead of one worker starting a long file while the other runs out of work.
LONGEST_FIRST = ("trainer/test_reproducible.py", "runtime/test_launcher.py", "trainer/test_train.py",
                 "deploy/test_export.py", "deploy/test_infer.py", "trainer/test_grad_accumulation.py",
                 "test_weights.py", "dev/test_bench.py", "test_features.py", "runtime/test_graph_kernel_fusion.py",
                 "test_eval.py")


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end to end: runs scripts as subprocesses, trains, or compiles a full-size variant")
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False  # xdist would otherwise hand out files by test count


def pytest_collection_modifyitems(items):
    """Long files first, in LONGEST_FIRST's order; the rest after them as collected (a stable sort keeps
    each file's tests together and in their order)."""
    rank = {os.path.join(REPO, "tests", name): i for i, name in enumerate(LONGEST_FIRST)}
    missing = [path for path in rank if not os.path.isfile(path)]
    if missing:
        raise pytest.UsageError(f"conftest.py LONGEST_FIRST names missing test files: {missing}")
    items.sort(key=lambda item: rank.get(str(item.path), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def cpu_graph_mode():
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")


def free_port() -> int:
    """A TCP port free at the time of the call, for msrun's scheduler (a fixed one could be taken by
    another run on the machine)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(*args, cwd=REPO, timeout=900):
    """Run a repository script as a user would; returns the CompletedProcess."""
    import subprocess
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
