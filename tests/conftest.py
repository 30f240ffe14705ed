"""Shared test setup: repository on sys.path, MindSpore in GRAPH mode on CPU, the e2e marker.

The folders mirror src/ (tests/layers, data, trainer, deploy, convert, runtime; tests/dev for the
developer tools in tools/).  Tests that run the scripts as subprocesses, train a model or compile a
full-size variant carry `e2e`: `pytest tests -m "not e2e"` is the fast unit part, `make test` runs
everything.
"""
import atexit
import contextlib
import functools
import hashlib
import os
import shutil
import sys
import tempfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
sys.path.insert(0, REPO)


# The test files that take longest, longest first (docs/development.md, "Tests"): they run before all
# others, so under `--dist loadfile` the two workers start on the long files and end on the short ones
# together, instead of one worker starting a long file while the other runs out of work.
LONGEST_FIRST = ("runtime/test_launcher.py", "dev/test_bench.py", "trainer/test_train.py", "deploy/test_export.py",
                 "trainer/test_grad_accumulation.py", "deploy/test_infer.py", "trainer/test_reproducible.py",
                 "test_weights.py", "runtime/test_graph_kernel_fusion.py", "kernels/test_model_kernels.py",
                 "trainer/test_train_step_size.py", "kernels/test_kernel_ops.py", "deploy/test_embeddings.py",
                 "deploy/test_onnx_export.py", "test_eval.py")


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


@pytest.fixture(autouse=True)
def graph_mode_kept():
    """A test that switches to PYNATIVE (forward hooks run only there) switches back: a worker runs its later
    files in whatever mode the last test left, and some of their nets do not run in PYNATIVE."""
    yield
    import mindspore as ms
    if ms.get_context("mode") != ms.GRAPH_MODE:
        ms.set_context(mode=ms.GRAPH_MODE)
        pytest.fail("the test left MindSpore in PYNATIVE mode")


@contextlib.contextmanager
def pynative_mode():
    """PYNATIVE inside the block, GRAPH after it: for what a test needs the values of, not the graph (a
    reference forward pass beside a script's run), one forward pass of a depth-12 net runs in seconds
    where compiling its graph takes longer."""
    import mindspore as ms
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


@pytest.fixture
def pynative():
    """PYNATIVE for a test whose subject is a net's shapes or values, not its graph (the scripts' GRAPH-mode
    runs cover the full-size variants: test_fidelity.py, test_resolution.py, test_export.py)."""
    with pynative_mode():
        yield


def free_port() -> int:
    """A TCP port free at the time of the call, for msrun's scheduler (a fixed one could be taken by
    another run on the machine)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What decides the graphs a script run compiles, besides its command: the code it runs and the
# configs it reads. MindSpore's own compile cache keys its graphs by source files alone, so a second
# run with another configuration loads the first run's graphs (compiled for other options).
SOURCES = ("src", "tools", "scripts")
_compile_cache_root = []


@functools.lru_cache(maxsize=None)
def _sources_digest() -> str:
    digest = hashlib.sha256()
    paths = [os.path.join(REPO, name) for name in sorted(os.listdir(REPO)) if name.endswith(".py")]
    for folder in SOURCES:
        for root, dirs, files in os.walk(os.path.join(REPO, folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            paths += [os.path.join(root, name) for name in sorted(files) if not name.endswith(".pyc")]
    for path in paths:
        digest.update(path.encode() + b"\0")
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def _argument_identity(arg: str, cwd) -> str:
    """A file named in the command by path, size and modification time (a checkpoint's settings or a
    script decide the graph); anything else, folders included, as written."""
    path = os.path.join(cwd, arg)
    if os.path.isfile(path):
        stat = os.stat(path)
        return f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
    return arg


def compile_cache_folder(args, cwd=REPO, env=None, group: str = "") -> str:
    """The folder of MindSpore's compile cache for one script run: keyed by this interpreter, MindSpore's
    version, the source tree, the working directory, the command (files in it by identity) and the
    environment, so only the same command started again (a resumed run, a re-run after SIGTERM) reuses
    the graphs compiled before; the cache's own graph index is the compile order within one process,
    and the same command compiles the same graphs in the same order. With `group`, the group's name
    stands for the command: the test names a group only for runs that differ in nothing that decides a
    graph (their data, output folders, worker mode, a resume, what they log)."""
    from importlib.metadata import version
    env = dict(os.environ if env is None else env)
    command = [f"group {group}"] if group else [_argument_identity(str(arg), cwd) for arg in args]
    key = hashlib.sha256()
    for part in (sys.executable, version("mindspore"), _sources_digest(), os.path.realpath(cwd), *command,
                 *(f"{k}={v}" for k, v in sorted(env.items()) if not k.startswith("PYTEST_"))):
        key.update(str(part).encode() + b"\0")
    if not _compile_cache_root:
        _compile_cache_root.append(tempfile.mkdtemp(prefix="conformer-compile-cache-"))
        atexit.register(shutil.rmtree, _compile_cache_root[0], True)
    return os.path.join(_compile_cache_root[0], key.hexdigest()[:32])


def script_env(args, cwd=REPO, compile_cache=False) -> dict:
    """The environment a test runs a repository script in (`args` as after the interpreter): MindSpore's
    logs off; with `compile_cache` (True, or a group's name: `compile_cache_folder`), for a command the
    test starts more than once, MindSpore's compile cache in `compile_cache_folder`, unless the test
    names a cache folder itself (MS_COMPILER_CACHE_PATH is also where graph kernel fusion keeps its
    kernels). Off by default: a run that writes its graphs into a cache nobody reads pays for the write."""
    env = dict(os.environ, GLOG_v="3")
    if compile_cache and "MS_COMPILER_CACHE_PATH" not in env:
        group = compile_cache if isinstance(compile_cache, str) else ""
        env.update(MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=compile_cache_folder(args, cwd, env, group))
    return env


def run_script(*args, cwd=REPO, timeout=900, compile_cache=False):
    """Run a repository script as a user would; returns the CompletedProcess."""
    import subprocess
    return subprocess.run([sys.executable, *args], cwd=cwd, env=script_env(args, cwd, compile_cache),
                          capture_output=True, text=True, timeout=timeout)
