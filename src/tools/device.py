"""Execution context from the config: GRAPH/PYNATIVE mode, device, seeds (one path for GPU and CPU)."""
import random

import numpy as np
import mindspore as ms


class DeviceError(RuntimeError):
    """The requested device is not usable with this MindSpore install."""


def init_context(cfg) -> None:
    """Set mode, device and every RNG from `cfg` (device_target, device_id, pynative_mode, seed).

    Parameter init draws from NumPy's global RNG, so all three generators are
    seeded: every rank then starts from identical weights.
    """
    target = cfg.device_target
    if target != "CPU" and not ms.hal.is_available(target):
        raise DeviceError(f"device_target {target} is not available in this MindSpore install "
                          f"(mindspore {ms.__version__}); use --device_target CPU or install the {target} build")
    ms.set_context(mode=ms.PYNATIVE_MODE if cfg.pynative_mode else ms.GRAPH_MODE)
    ms.set_device(target, cfg.device_id)
    ms.set_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
