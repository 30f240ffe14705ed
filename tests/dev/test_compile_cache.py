"""The tests' compile cache (tests/conftest.py `script_env(..., compile_cache=True)`): MindSpore's own cache, keyed by source files
alone, hands a run with other options the graph compiled for the first; the tests' key keeps each
command's graphs to that command, and the same command started again loads them."""
import os
import subprocess
import sys

from conftest import compile_cache_folder, run_script, script_env

# the graph depends on the command line: x * 3 or x + 1, a constant the compiler folds into the graph
SCRIPT = """import sys

import numpy as np
import mindspore as ms
from mindspore import nn

ms.set_context(mode=ms.GRAPH_MODE)
ms.set_device("CPU")


class Net(nn.Cell):
    def __init__(self, triple):
        super().__init__()
        self.triple = triple

    def construct(self, x):
        if self.triple:
            return x * 3
        return x + 1


print(Net(sys.argv[1] == "triple")(ms.Tensor(np.ones(2, np.float32))).asnumpy().tolist())
"""


def test_another_command_compiles_its_own_graph_and_the_same_command_reuses_it(tmp_path):
    script = tmp_path / "graph.py"
    script.write_text(SCRIPT)
    # MindSpore's cache as it comes: one folder for both commands, and the second gets the first's graph
    shared = dict(os.environ, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=str(tmp_path / "one"))
    plain = [subprocess.run([sys.executable, str(script), option], env=shared, capture_output=True, text=True,
                            timeout=300).stdout.strip() for option in ("triple", "plus")]
    assert plain == ["[3.0, 3.0]", "[3.0, 3.0]"], "MindSpore's cache no longer mixes up configurations: " + str(plain)

    # the tests' key: each command its own graph, again from the cache when started again
    folders = [script_env([str(script), option], tmp_path, True)["MS_COMPILER_CACHE_PATH"] for option in ("triple", "plus")]
    assert folders[0] != folders[1]
    results = [run_script(str(script), option, cwd=tmp_path, compile_cache=True) for option in ("triple", "plus")]
    assert [r.stdout.strip() for r in results] == ["[3.0, 3.0]", "[2.0, 2.0]"], results[-1].stderr
    graph = os.path.join(folders[1], "rank_0", "graph_cache", "compile_cache_0.mindir")
    os.utime(graph, ns=(1, 1))  # a compiling run would write it anew
    again = run_script(str(script), "plus", cwd=tmp_path, compile_cache=True)
    assert again.stdout.strip() == "[2.0, 2.0]" and os.stat(graph).st_mtime_ns == 1, "loaded, not compiled again"

def test_the_key_changes_with_the_scripts_files_and_environment(tmp_path):
    script = tmp_path / "graph.py"
    script.write_text(SCRIPT)
    first = compile_cache_folder([str(script), "plus"], tmp_path)
    assert compile_cache_folder([str(script), "plus"], tmp_path) == first
    assert compile_cache_folder([str(script), "plus"], tmp_path, dict(os.environ, MS_DEV_X="1")) != first
    os.utime(script, ns=(1, 1))  # a file named in the command: its identity is part of the key
    assert compile_cache_folder([str(script), "plus"], tmp_path) != first
    assert compile_cache_folder([str(script), "plus", "--grad_accumulation_steps", "2"], tmp_path) != first
    # a group: the runs a test names for it share one folder whatever their commands, apart from other groups
    group = compile_cache_folder([str(script), "plus"], tmp_path, group="g")
    assert compile_cache_folder([str(script), "triple", "--resume", "x"], tmp_path, group="g") == group
    assert group != first and compile_cache_folder([str(script), "plus"], tmp_path, group="h") != group
