"""Quiet by default: run directly (not through make), an entry point's first line is its own, not
MindSpore's log about the backends this install cannot load; a GLOG_v the user sets is honoured."""
import ast
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO

ENTRY_POINTS = ("train.py", "eval.py", "infer.py", "infer_onnx.py", "export.py", "eval_onnx.py", "convert.py",
                "summary.py", "visualize.py", "demo.py", "tools/bench.py", "tools/memory.py", "tools/soak.py")
MINDSPORE_LOG = re.compile(r"^\[(WARNING|INFO|DEBUG)\] ME\(|Load dynamic library", re.MULTILINE)


def first_imports(source: str) -> tuple:
    """Line numbers of the first module-level import of `src` (or a submodule) and of `mindspore`
    (None when there is none)."""
    first = {"src": None, "mindspore": None}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in first and first[top] is None:
                first[top] = node.lineno
    return first["src"], first["mindspore"]


def test_first_imports_sees_the_order():
    assert first_imports("import os\nfrom src.config import x\nimport mindspore as ms\n") == (2, 3)
    assert first_imports("import mindspore as ms\nfrom src import io\n") == (2, 1)
    assert first_imports("import numpy\n") == (None, None)


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_every_entry_point_imports_src_before_mindspore(script):
    """src/__init__.py sets GLOG_v, which MindSpore reads once, when it is imported."""
    with open(os.path.join(REPO, script)) as f:
        src_line, mindspore_line = first_imports(f.read())
    assert src_line is not None, f"{script} does not import src at module level"
    assert mindspore_line is None or src_line < mindspore_line, f"{script} imports mindspore before src"


def _eval_on_a_missing_backend(env: dict) -> subprocess.CompletedProcess:
    # Ascend is missing on CPU and GPU machines alike: MindSpore then logs why it cannot load its plugin
    return subprocess.run([sys.executable, "eval.py", "--config", "src/configs/conformer_tiny.yaml",
                           "--device_target", "Ascend"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_a_script_run_directly_prints_no_mindspore_log_unless_asked():
    env = {k: v for k, v in os.environ.items() if k != "GLOG_v"}
    quiet = _eval_on_a_missing_backend(env)
    assert quiet.returncode == 2, quiet.stderr
    assert not MINDSPORE_LOG.search(quiet.stdout + quiet.stderr), quiet.stderr
    assert quiet.stderr.startswith("eval.py: error: device_target Ascend is not available"), quiet.stderr
    verbose = _eval_on_a_missing_backend(dict(env, GLOG_v="2"))  # the user's own setting: warnings
    assert verbose.returncode == 2
    assert re.search(r"^\[WARNING\] ME\(", verbose.stderr, re.MULTILINE), verbose.stderr
