"""Write numpy arrays as a PyTorch zip checkpoint (torch.save's layout) without torch.

Test helper only: it lets tests hand convert.py full-size checkpoints in the
official format.  The reader it feeds is checked separately against files that
real torch wrote (tests/fixtures/torch_ckpt, tests/fixtures/fidelity).
"""
import collections
import contextlib
import pickle
import sys
import types
import zipfile

import numpy as np


class _StorageRef:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


@contextlib.contextmanager
def _fake_torch_globals():
    """Temporarily provide importable `torch._utils._rebuild_tensor_v2` / `torch.FloatStorage`
    so that pickle writes the same GLOBAL opcodes torch.save does."""
    saved = {name: sys.modules.get(name) for name in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("placeholder, never called")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    float_storage = type("FloatStorage", (), {"__module__": "torch", "__qualname__": "FloatStorage"})
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch.FloatStorage, torch._utils = float_storage, utils
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield _rebuild_tensor_v2, float_storage
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def write_torch_zip(obj, path, archive="archive"):
    """torch.save(obj, path) for nested dicts whose leaves are float32 numpy arrays or plain values."""
    storages = []
    with _fake_torch_globals() as (rebuild, float_storage):
        class _Tensor:
            def __init__(self, array):
                self.array = np.ascontiguousarray(array, dtype=np.float32)

            def __reduce__(self):
                ref = _StorageRef(str(len(storages)), self.array.size)
                storages.append((ref.key, self.array))
                stride = tuple(s // 4 for s in self.array.strides)
                return rebuild, (ref, 0, self.array.shape, stride, False, collections.OrderedDict())

        class _Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _StorageRef):
                    return ("storage", float_storage, o.key, "cpu", o.numel)
                return None

        def wrap(o):
            if isinstance(o, dict):
                return collections.OrderedDict((k, wrap(v)) for k, v in o.items())
            return _Tensor(o) if isinstance(o, np.ndarray) else o

        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            with zf.open(f"{archive}/data.pkl", "w") as f:
                _Pickler(f, protocol=2).dump(wrap(obj))
            zf.writestr(f"{archive}/byteorder", "little")
            for key, array in storages:
                zf.writestr(f"{archive}/data/{key}", array.astype("<f4").tobytes())
            zf.writestr(f"{archive}/version", "3\n")


def write_official_pth(net, path):
    """Write `net` as the official code saves it ({'model': state_dict}, torch zip format),
    with torch's names (weight/bias/running_*), without needing torch."""
    from src.convert.state_dict import NORM_MODULES
    inverse = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
    arrays = {}
    for p in net.get_parameters():
        module, _, leaf = p.name.rpartition(".")
        if module.rpartition(".")[2] in NORM_MODULES:
            leaf = inverse[leaf]
        arrays[f"{module}.{leaf}" if module else leaf] = p.asnumpy()
    write_torch_zip({"model": arrays}, path)
