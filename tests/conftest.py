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


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end to end: runs scripts as subprocesses, trains, or compiles a full-size variant")


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
