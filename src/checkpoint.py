"""Checkpoint files that are never half-written, carry a CRC32 checked on load, and load strictly:
writing goes through `save_checkpoint_atomic`, reading through `read_checkpoint`, and `load_weights`
puts weights of any format into a network (MindSpore .ckpt, .safetensors, or an official /
mmpretrain PyTorch .pth converted in memory with convert.py's rename table and checks)."""
import os
import sys
import zlib
from contextlib import contextmanager
from typing import Optional

import numpy as np
import mindspore as ms

from src.convert.state_dict import ConversionError, convert_state_dict, unwrap_state_dict
from src.convert.torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError, load_torch_checkpoint
from src.errors import ConformerError
from src.io import remove_quietly, replacing
from src.trainer.ema import EMA_PREFIX

# MindSpore ends a .ckpt saved with crc_check=True with b"crc_num" and the CRC32 in 10 bytes
_CRC_MARKER, _CRC_TRAILER = b"crc_num", 17
SAFETENSORS = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")
FORMATS_READ = "a MindSpore .ckpt, a .safetensors file or a PyTorch .pth/.pt/.pth.tar"
_HEADS = ("conv_cls_head.", "trans_cls_head.")


class CheckpointError(ConformerError, ValueError):
    """A checkpoint that is missing, unreadable or does not fit the network (one line)."""


@contextmanager
def _mindspore_log_silenced():
    """MindSpore logs its own ERROR/CRITICAL line when a checkpoint fails to read or write (with a
    misleading "May not have permission" for a CRC mismatch); ours is the one line the user gets."""
    logger = ms.log._get_logger()  # pylint: disable=protected-access  (MindSpore's logger has no public handle)
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def save_checkpoint_atomic(save_obj, path: str, append_dict=None) -> None:
    """ms.save_checkpoint (with its CRC32) into a temp file beside `path`, then rename it over `path`;
    a `path` ending in .safetensors gets that format (`_save_safetensors`).

    A crash at any moment leaves either the old file or the complete new one; a failed write
    (full disk, unwritable folder) raises WriteError naming `path` and leaves no temp file.
    """
    if path.lower().endswith(SAFETENSORS):
        with replacing(path, suffix=SAFETENSORS) as tmp:
            _save_safetensors(save_obj, tmp, append_dict or {})
            os.chmod(tmp, 0o444)  # as ms.save_checkpoint leaves its files: read-only
        return
    # .ckpt suffix: otherwise ms.save_checkpoint appends one and the rename misses the file
    with replacing(path, suffix=".ckpt") as tmp:
        try:
            with _mindspore_log_silenced():
                ms.save_checkpoint(save_obj, tmp, async_save=False, append_dict=append_dict, crc_check=True)
        finally:
            # MindSpore writes NAME.tmp and renames it to NAME.ckpt; a failed write leaves NAME.tmp
            remove_quietly(tmp[:-len(".ckpt")] + ".tmp")


def _save_safetensors(save_obj, path: str, append_dict: dict) -> None:
    """The file ms.save_checkpoint(..., format="safetensors", crc_check=True) writes -- metadata
    "format": "ms" and "crc_num", the CRC32 over the sorted names and their bytes, which
    ms.load_checkpoint verifies -- with string entries (convert.py's `converted_from`) as metadata:
    MindSpore's own writer refuses strings there ("Unknown dtype str")."""
    from safetensors.numpy import save_file  # a dependency of MindSpore itself (its serialization imports it)
    entries = ([(p.name, p) for p in save_obj.get_parameters()] if isinstance(save_obj, ms.nn.Cell)
               else [(e["name"], e["data"]) for e in save_obj])
    tensors = {name: np.ascontiguousarray(data.asnumpy() if hasattr(data, "asnumpy") else data)
               for name, data in entries}
    metadata = {"format": "ms"}
    for key, value in append_dict.items():
        if isinstance(value, str):
            metadata[key] = value
        else:
            tensors[key] = np.asarray(value)
    crc = 0
    for name in sorted(tensors):
        # bytes(array), as ms.load_checkpoint hashes it (for a 0-d integer array that is `value` zero bytes)
        crc = zlib.crc32(bytes(tensors[name]), zlib.crc32(name.encode("utf-8"), crc))
    metadata["crc_num"] = str(crc)
    save_file(tensors, path, metadata=metadata)


def _safetensors_metadata(path: str) -> dict:
    from safetensors import safe_open
    with safe_open(path, framework="np") as f:
        return dict(f.metadata() or {})


def weights_format(path: str) -> str:
    """"ckpt", "safetensors" or "torch", from the file's first bytes where they tell (a zip or a
    pickle is a torch.save file, a JSON header after its 8-byte length a safetensors file), else
    from its suffix; anything else is one CheckpointError line naming the file."""
    if not path:
        raise CheckpointError("no checkpoint given (set --pretrained / --checkpoint)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    size, lower = os.path.getsize(path), path.lower()
    # safetensors first: its header length may begin with any byte, 0x80 included
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= size - 8:
        if not lower.endswith(SAFETENSORS):  # MindSpore picks the reader by the name
            raise CheckpointError(f"{path}: is a safetensors file: name it *{SAFETENSORS} to load it")
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):  # zip (torch >= 1.6), pickle (legacy)
        return "torch"
    for fmt, suffixes in (("ckpt", (".ckpt",)), ("safetensors", (SAFETENSORS,)), ("torch", TORCH_SUFFIXES)):
        if lower.endswith(suffixes):
            return fmt  # its reader says what is wrong with it
    raise CheckpointError(f"{path}: not a weights file: expected {FORMATS_READ} (its content is none of "
                          "them and its name does not say)")


def _has_crc(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < _CRC_TRAILER:
            return False
        f.seek(-_CRC_TRAILER, os.SEEK_END)
        return f.read(len(_CRC_MARKER)) == _CRC_MARKER


def read_checkpoint(path: str) -> dict:
    """{name: Parameter} of a MindSpore checkpoint (.ckpt or .safetensors), its CRC32 verified;
    problems become one CheckpointError line naming the file."""
    if weights_format(path) == "torch":
        raise CheckpointError(f"{path}: is a PyTorch checkpoint, not a MindSpore one: it gives weights only "
                              "(--pretrained, or --checkpoint outside train.py)")
    if path.lower().endswith(SAFETENSORS):
        return _read_safetensors(path)
    crc = False
    try:
        # Checkpoints written before ours carried a CRC (and those of other tools) have none: with
        # crc_check=True MindSpore loads them anyway, but warns at every load, so the check is asked
        # for only when the trailer is there. A flipped byte in the marker itself leaves 17 bytes that
        # do not parse, so that file is refused too.
        crc = _has_crc(path)
        with _mindspore_log_silenced():
            return ms.load_checkpoint(path, crc_check=crc)
    except (ValueError, RuntimeError, OSError, TypeError) as e:
        if crc and "crc check" in str(e.__cause__ or ""):
            raise CheckpointError(f"{path}: damaged: its CRC32 does not match its contents (changed after it was "
                                  "written); use another checkpoint") from None
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable MindSpore checkpoint ({first_line})") from None


def _read_safetensors(path: str) -> dict:
    try:
        metadata = _safetensors_metadata(path)
        with _mindspore_log_silenced():
            params = ms.load_checkpoint(path, format="safetensors", crc_check="crc_num" in metadata)
    except Exception as e:  # safetensors' Rust errors share no base class beyond Exception
        if "crc check" in str(e):
            raise CheckpointError(f"{path}: damaged: its CRC32 does not match its contents (changed after it was "
                                  "written); use another checkpoint") from None
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable safetensors file ({first_line})") from None
    params.update({k: v for k, v in metadata.items() if k not in ("format", "crc_num", "remove_redundancy")})
    return params


def _converted_from_torch(net, path: str, skip_mismatched_head: bool) -> dict:
    """{name: Parameter} of a PyTorch checkpoint converted for `net` as convert.py converts it
    (same rename table, same checks: unknown keys, shape mismatches), plus `converted_from`."""
    expected = {p.name: tuple(p.shape) for p in net.get_parameters()}
    try:
        state_dict, source = unwrap_state_dict(load_torch_checkpoint(path))
        # a features_only backbone has no heads and no trans_norm: their keys are not unknown
        unused = [prefix for prefix in _HEADS + ("trans_norm.",)
                  if not any(name.startswith(prefix) for name in expected)]
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(tuple(unused))}
        if skip_mismatched_head:  # heads of another size are left to load_weights' head rule
            expected.update({k: tuple(v.shape) for k, v in state_dict.items()
                             if k.startswith(_HEADS) and k in expected})
        params = convert_state_dict(state_dict, expected)
    except ConversionError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (CheckpointFormatError, UnsafeCheckpointError, FileNotFoundError) as e:  # these name the file
        raise CheckpointError(str(e)) from None
    converted = {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in params.items()}
    converted["converted_from"] = "mmpretrain" if source == "mmpretrain" else "official"
    return converted


def ema_weights(params: dict, path: str) -> dict:
    """The EMA shadows of a training checkpoint under the network's names (--use_ema)."""
    prefix = EMA_PREFIX + "."
    ema = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    if not ema:
        raise CheckpointError(f"{path}: has no EMA weights ({prefix}* entries): --use_ema reads a training "
                              "checkpoint (ckpt_root_dir) of a run with with_ema: True; best checkpoints "
                              "already hold the EMA weights")
    return {**ema, **{k: v for k, v in params.items() if isinstance(v, str)}}


def read_weights(net, path: str, skip_mismatched_head: bool = False, use_ema: bool = False,
                 checkpoint: Optional[dict] = None) -> dict:
    """{name: Parameter or str} of the weights at `path` in any format `weights_format` knows
    (a .pth converted for `net`), or of `checkpoint`, that file as `read_checkpoint` already read it;
    with `use_ema`, the EMA shadows in place of the weights."""
    if checkpoint is not None:
        params = checkpoint
    elif weights_format(path) == "torch":
        params = _converted_from_torch(net, path, skip_mismatched_head)
    else:
        params = read_checkpoint(path)
    return ema_weights(params, path) if use_ema else params


def _warn_approximations(net, origin, path: str) -> None:
    """Weights converted from a PyTorch model (convert.py records which) reproduce its outputs only
    with its numerics; the ModelZoo approximations shift them."""
    approximations = getattr(net, "approximations", ())
    if isinstance(origin, str) and approximations:
        print(f"warning: {path} holds weights converted from the {origin} model, but this network uses the "
              f"ModelZoo approximations ({', '.join(approximations)}): its outputs differ from the {origin} "
              "model's; set both keys True for its numerics", file=sys.stderr, flush=True)


def load_weights(net, path: str, skip_mismatched_head: bool = False, use_ema: bool = False,
                 checkpoint: Optional[dict] = None) -> list:
    """Load `net`'s parameters from `path` (.ckpt, .safetensors or .pth, see `read_weights`)
    strictly; returns the names left as initialised.

    Entries that are not parameters of `net` (optimizer moments, EMA copies,
    epoch/step) are ignored.  A missing or wrongly-shaped parameter raises
    CheckpointError naming it -- except, with `skip_mismatched_head`, the
    classifier heads, which keep their fresh initialisation (fine-tuning with
    another number of classes).  `use_ema`: the EMA weights of a training checkpoint.  `checkpoint`:
    the file as already read (`apply_checkpoint_settings` returns it), so it is not read twice.
    """
    params = read_weights(net, path, skip_mismatched_head, use_ema, checkpoint)
    _warn_approximations(net, params.get("converted_from"), path)
    selected, kept_init = {}, []
    for p in net.get_parameters():
        found = params.get(p.name)
        is_head = p.name.startswith(_HEADS)
        if found is None:
            raise CheckpointError(f"{path}: does not fit the model: parameter {p.name!r} is missing "
                                  "(checkpoint of another arch?)")
        if tuple(found.shape) != tuple(p.shape):
            if skip_mismatched_head and is_head:
                kept_init.append(p.name)
                continue
            raise CheckpointError(f"{path}: does not fit the model: {p.name!r} has shape "
                                  f"{tuple(found.shape)} in the checkpoint, {tuple(p.shape)} in the model")
        selected[p.name] = found
    not_loaded, _ = ms.load_param_into_net(net, selected)
    not_loaded = [name for name in not_loaded if name not in kept_init]
    if not_loaded:  # load_param_into_net reports rather than raises; nothing else may stay unloaded
        raise CheckpointError(f"{path}: parameter {not_loaded[0]!r} could not be loaded")
    return kept_init
