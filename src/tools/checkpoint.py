"""Checkpoint files that are never half-written, and strict loading."""
import os
import sys
import tempfile

import mindspore as ms


def save_checkpoint_atomic(save_obj, path: str, append_dict=None) -> None:
    """ms.save_checkpoint into a temp file beside `path`, then rename it over `path`.

    A crash at any moment leaves either the old file or the complete new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # .ckpt suffix: otherwise ms.save_checkpoint appends one and the rename misses the file
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=directory)
    os.close(fd)
    try:
        ms.save_checkpoint(save_obj, tmp, async_save=False, append_dict=append_dict)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or does not fit the network (one line)."""


def read_checkpoint(path: str) -> dict:
    """{name: Parameter} of a MindSpore checkpoint; problems become one CheckpointError line."""
    if not path:
        raise CheckpointError("no checkpoint given (set --pretrained / --checkpoint)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError, TypeError) as e:
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
