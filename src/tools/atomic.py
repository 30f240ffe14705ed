"""Files that are never half-written: write a temp file beside the target, then rename it over.

MindSpore-free, so the onnxruntime scripts can use it too.
"""
import json
import os
import tempfile


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str, data, mode: str = "w") -> None:
    """Write `data` (str, or bytes with mode "wb") to `path` atomically."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode of a new file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")
