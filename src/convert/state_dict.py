"""Official / mmpretrain PyTorch Conformer checkpoints -> MindSpore parameter dict, through a fixed
rename table (docs/weights.md), no shape guessing; every name and shape is checked against the target
network and the first mismatch is reported in one line."""
import re

import numpy as np

from src.errors import ConformerError


# Modules of the official model that are BatchNorm or LayerNorm (by attribute name).
NORM_MODULES = {"bn1", "bn2", "bn3", "bn", "residual_bn", "ln", "norm1", "norm2", "trans_norm"}
_NORM_RENAMES = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                 "running_var": "moving_variance"}
# mmpretrain's TransformerEncoderLayer names -> the official Block's names.
_MMPRETRAIN_BLOCK_RENAMES = [
    (re.compile(r"\.ln1\."), ".norm1."),
    (re.compile(r"\.ln2\."), ".norm2."),
    (re.compile(r"\.ffn\.layers\.0\.0\."), ".mlp.fc1."),
    (re.compile(r"\.ffn\.layers\.1\."), ".mlp.fc2."),
]


class ConversionError(ConformerError, ValueError):
    """The checkpoint does not fit the target network (one line, naming the key)."""


def unwrap_state_dict(ckpt) -> tuple:
    """(state dict with official names, source format) of a loaded .pth object."""
    if not isinstance(ckpt, dict):
        raise ConversionError(f"expected a dict of tensors, got {type(ckpt).__name__}")
    if "state_dict" in ckpt:
        return mmpretrain_to_official(ckpt["state_dict"]), "mmpretrain"
    if "model" in ckpt and isinstance(ckpt["model"], dict):
        return dict(ckpt["model"]), "official"
    if ckpt and all(isinstance(v, np.ndarray) for v in ckpt.values()):
        return dict(ckpt), "bare state dict"
    raise ConversionError(f"no state dict found (top-level keys: {', '.join(map(str, list(ckpt)[:8]))})")


def mmpretrain_to_official(state_dict: dict) -> dict:
    out = {}
    for name, value in state_dict.items():
        if name.startswith("backbone."):
            name = name[len("backbone."):]
        elif name.startswith("head."):
            name = name[len("head."):]
        else:
            raise ConversionError(f"unexpected mmpretrain key {name!r} (neither backbone. nor head.)")
        for pattern, replacement in _MMPRETRAIN_BLOCK_RENAMES:
            name = pattern.sub(replacement, name)
        out[name] = value
    return out


def official_to_mindspore_name(name: str):
    """MindSpore parameter name of an official key, or None for keys MindSpore has no use for."""
    module, _, leaf = name.rpartition(".")
    if module.rpartition(".")[2] in NORM_MODULES:
        if leaf == "num_batches_tracked":
            return None
        return f"{module}.{_NORM_RENAMES[leaf]}" if leaf in _NORM_RENAMES else name
    return name


def convert_state_dict(state_dict: dict, expected: dict) -> dict:
    """Rename `state_dict` (official names) and check it against `expected` {name: shape}.

    Returns {mindspore name: float32 array}; raises ConversionError naming the
    first missing, unexpected or wrongly-shaped key.
    """
    converted = {}
    for name, value in state_dict.items():
        ms_name = official_to_mindspore_name(name)
        if ms_name is None:
            continue
        if ms_name not in expected:
            raise ConversionError(f"unexpected key {name!r}: the target model has no parameter {ms_name!r}")
        if tuple(value.shape) != tuple(expected[ms_name]):
            raise ConversionError(f"shape mismatch at {name!r}: checkpoint {tuple(value.shape)}, "
                                  f"model {tuple(expected[ms_name])}")
        converted[ms_name] = np.ascontiguousarray(value, dtype=np.float32)
    missing = [name for name in expected if name not in converted]
    if missing:
        raise ConversionError(f"missing key {missing[0]!r} ({len(missing)} parameter(s) of the model "
                              "are not in the checkpoint)")
    return converted


def head_classes(state_dict: dict):
    """Number of classes of an official-name state dict (rows of its transformer head), or None."""
    weight = state_dict.get("trans_cls_head.weight")
    return None if weight is None else int(weight.shape[0])
