"""Checkpoint files that are never half-written, carry a CRC32 checked on load, and load strictly.

All checkpoint writing goes through `save_checkpoint_atomic`, all reading through `read_checkpoint`.
"""
import os
import sys
from contextlib import contextmanager

import mindspore as ms

from src.errors import ConformerError
from src.io import remove_quietly, replacing

# MindSpore ends a .ckpt saved with crc_check=True with b"crc_num" and the CRC32 in 10 bytes
_CRC_MARKER, _CRC_TRAILER = b"crc_num", 17


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
    """ms.save_checkpoint (with its CRC32) into a temp file beside `path`, then rename it over `path`.

    A crash at any moment leaves either the old file or the complete new one; a failed write
    (full disk, unwritable folder) raises WriteError naming `path` and leaves no temp file.
    """
    # .ckpt suffix: otherwise ms.save_checkpoint appends one and the rename misses the file
    with replacing(path, suffix=".ckpt") as tmp:
        try:
            with _mindspore_log_silenced():
                ms.save_checkpoint(save_obj, tmp, async_save=False, append_dict=append_dict, crc_check=True)
        finally:
            # MindSpore writes NAME.tmp and renames it to NAME.ckpt; a failed write leaves NAME.tmp
            remove_quietly(tmp[:-len(".ckpt")] + ".tmp")


def _has_crc(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() < _CRC_TRAILER:
            return False
        f.seek(-_CRC_TRAILER, os.SEEK_END)
        return f.read(len(_CRC_MARKER)) == _CRC_MARKER


def read_checkpoint(path: str) -> dict:
    """{name: Parameter} of a MindSpore checkpoint, its CRC32 verified; problems become one
    CheckpointError line naming the file."""
    if not path:
        raise CheckpointError("no checkpoint given (set --pretrained / --checkpoint)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
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


def _warn_approximations(net, origin, path: str) -> None:
    """Weights converted from a PyTorch model (convert.py records which) reproduce its outputs only
    with its numerics; the ModelZoo approximations shift them."""
    approximations = getattr(net, "approximations", ())
    if isinstance(origin, str) and approximations:
        print(f"warning: {path} holds weights converted from the {origin} model, but this network uses the "
              f"ModelZoo approximations ({', '.join(approximations)}): its outputs differ from the {origin} "
              "model's; set both keys True for its numerics", file=sys.stderr, flush=True)


def load_weights(net, path: str, skip_mismatched_head: bool = False) -> list:
    """Load `net`'s parameters from `path` strictly; returns the names left as initialised.

    Entries that are not parameters of `net` (optimizer moments, EMA copies,
    epoch/step) are ignored.  A missing or wrongly-shaped parameter raises
    CheckpointError naming it -- except, with `skip_mismatched_head`, the
    classifier heads, which keep their fresh initialisation (fine-tuning with
    another number of classes).
    """
    params = read_checkpoint(path)
    _warn_approximations(net, params.get("converted_from"), path)
    selected, kept_init = {}, []
    for p in net.get_parameters():
        found = params.get(p.name)
        is_head = p.name.startswith(("conv_cls_head.", "trans_cls_head."))
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
