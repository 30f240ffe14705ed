"""Shared test setup: repository on sys.path, MindSpore in GRAPH mode on CPU."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
sys.path.insert(0, REPO)


@pytest.fixture(scope="session", autouse=True)
def cpu_graph_mode():
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_device("CPU")


def run_script(*args, cwd=REPO, timeout=900):
    """Run a repository script as a user would; returns the CompletedProcess."""
    import subprocess
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
