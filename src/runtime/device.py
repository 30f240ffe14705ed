"""Execution context from the config: GRAPH/PYNATIVE mode, device, seeds, data-parallel group.
One code path for GPU and CPU: only `device_target` differs.
"""
import importlib.util
import logging
import os
import random

import numpy as np
import mindspore as ms
import mindspore.dataset as ds

from src.errors import ConformerError
from src.kernels import set_cpu_kernels
from src.io import user_cache_folder


# set in each process by msrun (dynamic cluster), a rank table launch, or OpenMPI's mpirun
LAUNCHER_ENV = {"MS_WORKER_NUM", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE"}


class DeviceError(ConformerError, RuntimeError):
    """The requested device is not usable with this MindSpore install."""


def init_context(cfg) -> None:
    """Set mode, device, determinism and every RNG from `cfg` (device_target, device_id, pynative_mode,
    deterministic, seed; dump_graph saves the compiled IR graphs under summary_root_dir/graphs).

    Parameter init draws from NumPy's global RNG, so all generators are seeded:
    every rank then starts from identical weights. `deterministic` asks MindSpore for
    deterministic kernels and collectives (docs/training.md "Reproducibility"); it is set before
    init_distributed creates the communication group, as MindSpore requires, and only
    once per process (MindSpore refuses a second setting).
    """
    target = cfg.device_target
    if target != "CPU" and not ms.hal.is_available(target):
        raise DeviceError(f"device_target {target} is not available in this MindSpore install "
                          f"(mindspore {ms.__version__}); use --device_target CPU or install the {target} build")
    if cfg.dump_graph:  # MindSpore reads these when it compiles the first graph
        os.environ["MS_DEV_SAVE_GRAPHS"] = "1"
        os.environ["MS_DEV_SAVE_GRAPHS_PATH"] = os.path.join(cfg.summary_root_dir, "graphs")
    ms.set_context(mode=ms.PYNATIVE_MODE if cfg.pynative_mode else ms.GRAPH_MODE)
    # msrun gives each worker its local device in DEVICE_ID; under mpirun, importing mindspore copies
    # OMPI_COMM_WORLD_LOCAL_RANK there
    device_id = int(os.environ["DEVICE_ID"]) if cfg.device_num > 1 and "DEVICE_ID" in os.environ else cfg.device_id
    ms.set_device(target, device_id)
    if ms.get_context("deterministic") != ("ON" if cfg.deterministic else "OFF"):
        try:
            ms.set_deterministic(cfg.deterministic)
        except RuntimeError:
            raise DeviceError(f"deterministic {cfg.deterministic}: this process already set the other value "
                              "(MindSpore allows one setting per process)") from None
    set_cpu_kernels(cfg.cpu_kernels)  # read by the cells when the model is built, after this
    ms.set_seed(cfg.seed)
    ds.config.set_seed(cfg.seed)  # MindSpore's own dataset random ops (ours draw per sample: src/data/imagenet.py)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)


def graph_kernel_cache() -> str:
    """Where fused kernels are compiled and kept across runs: MS_COMPILER_CACHE_PATH if set, else
    the user's cache folder (MindSpore's own default is the working directory)."""
    return os.environ.get("MS_COMPILER_CACHE_PATH") or user_cache_folder("graph_kernels")


def set_graph_kernel_fusion(on: bool) -> None:
    """MindSpore's graph kernel fusion (AKG) for every graph compiled after this, when `on`
    (`graph_kernel_fusion`; docs/training.md "Memory levers"). Elementwise chains, transposes and reductions
    become compiled kernels that keep no intermediate tensors and no index tables."""
    if not on:
        return
    if importlib.util.find_spec("decorator") is None:  # AKG's compiler imports it, deep inside MindSpore
        raise DeviceError("graph_kernel_fusion needs the Python package 'decorator' (pip install decorator, "
                          "or pip install -r requirements.txt)")
    if os.environ.get("OMP_NUM_THREADS") is None:  # too late to set here: libgomp has read it (runtime/openmp.py)
        logging.getLogger(__name__).warning(
            "graph_kernel_fusion with OMP_NUM_THREADS unset: each fused kernel spins on every core; "
            "start Python with OMP_NUM_THREADS=1")
    cache = graph_kernel_cache()
    os.makedirs(cache, exist_ok=True)
    os.environ["MS_COMPILER_CACHE_PATH"] = cache  # read when the kernel compiler starts, at the first compile
    ms.set_context(graph_kernel_flags="--opt_level=1")


def init_distributed(cfg) -> tuple:
    """(rank_id, rank_size); data parallel with mean gradients when device_num > 1.

    A single device never touches the communication library, so `python train.py`
    works without a launcher; device_num > 1 must be started by a launcher, msrun
    or OpenMPI's mpirun (scripts/run_distribute_train_gpu.sh sets both).
    """
    if cfg.device_num <= 1:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    if not LAUNCHER_ENV & set(os.environ):
        raise DeviceError(f"device_num {cfg.device_num} needs one process per device: start with "
                          "scripts/run_distribute_train_gpu.sh (msrun or mpirun), or set --device_num 1")
    init()
    size = get_group_size()
    if size != cfg.device_num:
        raise DeviceError(f"device_num is {cfg.device_num} but {size} processes were launched")
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=size)
    return get_rank(), size
