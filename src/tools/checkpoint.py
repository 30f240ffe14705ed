"""Checkpoint files that are never half-written, and strict loading."""
import os
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
