"""The kernel library: built once per machine into a cache keyed by sources, compiler and CPU; safe when
processes build at once; no compiler or a failed build is one warning and MindSpore's ops; the
`cpu_kernels` key switches the kernels off."""
import ctypes
import logging
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO
from test_model_kernels import KERNEL_CELLS
from src.kernels import LayerNorm, Softmax, build, set_cpu_kernels
from src.layers.exportable_ops import GELU


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty kernel cache, and this process's memo of built libraries forgotten (restored after)."""
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(build, "_BUILT", {})
    return tmp_path / "cache"


def test_the_cache_key_follows_sources_compiler_flags_and_cpu(tmp_path, monkeypatch):
    key = build.cache_key(["g++"], "g++ 12.2.0")
    assert key == build.cache_key(["g++"], "g++ 12.2.0")
    assert key != build.cache_key(["g++"], "g++ 13.1.0")
    assert key != build.cache_key(["clang++"], "g++ 12.2.0")
    monkeypatch.setattr(build, "cpu_features", lambda: "flags : fpu sse sse2 avx2")  # another CPU
    other_cpu = build.cache_key(["g++"], "g++ 12.2.0")
    monkeypatch.setattr(build, "cpu_features", lambda: "flags : fpu sse sse2 avx2 avx512f")
    assert other_cpu != build.cache_key(["g++"], "g++ 12.2.0") != key
    monkeypatch.undo()
    csrc = tmp_path / "csrc"
    shutil.copytree(build.CSRC, csrc)
    monkeypatch.setattr(build, "CSRC", str(csrc))
    assert build.cache_key(["g++"], "g++ 12.2.0") == key
    with open(csrc / "gelu.cc", "a") as f:
        f.write("// edited\n")
    assert build.cache_key(["g++"], "g++ 12.2.0") != key
    monkeypatch.setattr(build, "CXXFLAGS", build.CXXFLAGS + ("-ffast-math",))
    assert build.cache_key(["g++"], "g++ 12.2.0") != key


def test_the_cpu_features_are_the_first_processors_flags():
    features = build.cpu_features()
    if os.path.exists("/proc/cpuinfo"):
        assert features.count("flags") <= 1 and "flags" in features


def test_built_once_then_reused(fresh_cache, monkeypatch):
    path = build.build_library()
    assert path.startswith(str(fresh_cache)) and os.path.basename(path) == build.LIBRARY_NAME
    lib = ctypes.CDLL(path)
    for name in ("LayerNormForward", "LayerNormBackward", "GeluForward", "GeluBackward",
                 "SoftmaxForward", "SoftmaxBackward", "TransposeForward"):
        assert getattr(lib, name)
    monkeypatch.setattr(build, "_compile", lambda *a: pytest.fail("rebuilt a library the cache holds"))
    assert build.build_library() == path
    assert sorted(os.listdir(os.path.dirname(path))) == [".lock", build.LIBRARY_NAME]  # no temp file left


def test_processes_building_at_once_share_one_library(fresh_cache):
    code = "from src.kernels.build import build_library; print(build_library())"
    env = dict(os.environ, **{build.CACHE_ENV: str(fresh_cache)})
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    path = paths.pop()
    assert sorted(os.listdir(os.path.dirname(path))) == [".lock", build.LIBRARY_NAME]
    assert ctypes.CDLL(path).GeluForward


def _one_warning(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    return lines[0]


def test_no_compiler_is_one_warning_and_mindspore_ops(fresh_cache, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "/nonexistent/bin/g++")
    with caplog.at_level(logging.WARNING):
        cells = [LayerNorm(8, epsilon=1e-6), GELU(), Softmax(), LayerNorm(8, epsilon=1e-5)]
    assert not [c for c in cells if c.use_kernels]
    assert "cpu_kernels" in _one_warning(caplog) and "MindSpore's own ops" in caplog.text
    assert not os.path.exists(fresh_cache)


def test_a_failed_build_is_one_warning_and_leaves_no_library(fresh_cache, monkeypatch, caplog):
    monkeypatch.setenv("CXX", "g++ -fno-such-option-anywhere")
    with caplog.at_level(logging.WARNING):
        cells = [GELU(), Softmax()]
    assert not [c for c in cells if c.use_kernels]
    assert "failed" in _one_warning(caplog)
    left = [name for _, _, files in os.walk(fresh_cache) for name in files]
    assert left == [".lock"]


def test_switched_off_the_cells_use_mindspore_ops():
    set_cpu_kernels(False)
    try:
        assert not GELU().use_kernels and not LayerNorm(4, epsilon=1e-6).use_kernels
    finally:
        set_cpu_kernels(True)
    assert GELU().use_kernels


@pytest.mark.parametrize("value,expected", [("true", True), ("false", False)])
def test_the_cpu_kernels_key_reaches_the_model(value, expected):
    code = ("from src.config import parse_args; from src.runtime.device import init_context; "
            "from src.conformer import create_model_from_config; from src.kernels import kernels_in_use; "
            f"cfg = parse_args(['--device_target', 'CPU', '--cpu_kernels', '{value}', '--arch', "
            "'conformer_reduced_patch16', '--num_classes', '4'], script='summary.py'); init_context(cfg); "
            "print(kernels_in_use(create_model_from_config(cfg)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    count = int(out.stdout.strip().splitlines()[-1])
    # reduced: 3 blocks of 2 LayerNorms, a softmax and a GELU, 2 FCU-downs (LayerNorm, GELU), the final
    # norm; 22 BatchNorms; the columns of 6 convolutions (the stem and the 5 bottleneck 3x3s); the biases
    # of the 4 linear layers of each block; 19 layout transposes
    assert count == (KERNEL_CELLS if expected else 0)


def test_prebuild_command_prints_the_library_or_one_line_without_a_compiler(fresh_cache):
    """`python -m src.kernels` (the Makefile's set-up step) never fails the set-up."""
    env = dict(os.environ, **{build.CACHE_ENV: str(fresh_cache)})
    out = subprocess.run([sys.executable, "-m", "src.kernels"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and os.path.isfile(out.stdout.strip()), out.stderr
    env["CXX"] = "/nonexistent/bin/g++"
    out = subprocess.run([sys.executable, "-m", "src.kernels"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "MindSpore's own ops" in out.stderr
