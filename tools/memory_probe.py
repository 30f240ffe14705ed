"""Peak host memory of training steps under the memory levers, measured in the process that runs them:
`measure(cfg, steps)` builds the network and train step as train.py does, compiles its graphs (and hands
the compiler's freed memory back, as the trainer does), runs `steps` optimizer steps on one synthetic
batch and reads the kernel's counters of its resident memory (the columns: docs/benchmark.md
"tools/memory.py"; Linux >= 4.0, elsewhere only `peak`)."""
import os
import re
import resource
import time

import numpy as np
import mindspore as ms

from src.conformer import create_model_from_config
from src.runtime.device import init_context, set_graph_kernel_fusion
from src.inference.amp import mixed_precision
from src.trainer.trainer import build_train_step

# name -> config overrides for an optimizer step of `batch` images
VARIANTS = {
    "plain": lambda batch, micro: {"batch_size": batch},
    "recompute": lambda batch, micro: {"batch_size": batch, "recompute": True},
    "accumulation": lambda batch, micro: {"batch_size": batch // micro, "grad_accumulation_steps": micro},
}
_STATUS = "/proc/self/status"
# MindSpore prints its memory pool's statistics at exit under this setting (MS_DEV_RUNTIME_CONF)
POOL_STATISTICS = "memory_statistics:True"
_POOL_PEAK = re.compile(r"The dynamic memory pool total allocated mem:\d+M.*?actual peak used mem:(\d+)M")


def pool_peak_mib(output: str):
    """The peak MiB of MindSpore's memory pool from a process's output under POOL_STATISTICS, or None
    when it printed none (another MindSpore version, another device)."""
    found = _POOL_PEAK.findall(output)
    return max(int(v) for v in found) if found else None


def _status_mib(field: str):
    """A memory field of /proc/self/status in MiB, or None where there is none."""
    if not os.path.exists(_STATUS):
        return None
    with open(_STATUS) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _max_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if os.uname().sysname == "Linux" else peak / 2 ** 20  # kB on Linux, bytes on macOS


def measure(cfg, steps: int) -> dict:
    """Memory and time of optimizer steps of cfg.batch_size x cfg.grad_accumulation_steps images."""
    init_context(cfg)
    set_graph_kernel_fusion(cfg.graph_kernel_fusion)
    net = mixed_precision(create_model_from_config(cfg), cfg.amp_level)
    train_step, _, _ = build_train_step(cfg, net, steps_per_epoch=steps, rank_size=1)
    rng = np.random.default_rng(cfg.seed)
    images = ms.Tensor(rng.standard_normal((cfg.batch_size, 3, cfg.image_size, cfg.image_size), np.float32))
    targets = ms.Tensor(np.eye(cfg.num_classes, dtype=np.float32)[rng.integers(0, cfg.num_classes, cfg.batch_size)])
    built = _status_mib("VmRSS")

    start = time.perf_counter()
    train_step.compile_steps(images, targets)  # as the trainer: compiled, then the freed memory handed back
    compile_s = time.perf_counter() - start
    compiled = _status_mib("VmRSS")
    compile_peak = _status_mib("VmHWM")
    reset = _reset_peak()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        for _ in range(cfg.grad_accumulation_steps - 1):
            train_step.accumulate(images, targets)
        train_step(images, targets)[0].asnumpy()
        times.append(time.perf_counter() - start)
    result = {"images_per_step": cfg.batch_size * cfg.grad_accumulation_steps, "micro_batch": cfg.batch_size,
              "recompute": cfg.recompute, "compile_s": round(compile_s, 1),
              "first_step_s": round(times[0], 2), "step_s": round(float(np.median(times[1:] or times)), 2)}
    if compiled is None:
        result["peak_mib"] = round(_max_rss_mib(), 1)
        return result
    run_peak = _status_mib("VmHWM")
    result.update(built_mib=round(built, 1), compiled_mib=round(compiled, 1),
                  peak_mib=round(max(compile_peak, run_peak), 1))
    if reset:
        result["step_mib"] = round(run_peak - compiled, 1)
    return result
