"""Files that are never half-written: write a temp file beside the target, fsync, then rename it over.
Every file the project writes goes through `replacing`; a write that fails (full disk, read-only or
unwritable folder) raises one WriteError naming the target and the cause, leaves no temp file and the
previous file untouched.  MindSpore-free, so the onnxruntime scripts use it too."""
import json
import os
import shutil
import tempfile
from contextlib import contextmanager

from src.errors import ConformerError

# temp files start with it: a run killed mid-write leaves only such hidden names, which
# CheckpointKeeper removes at the next start
TEMP_PREFIX = ".tmp-"


class WriteError(ConformerError, RuntimeError):
    """A file that could not be written: `cannot write PATH: CAUSE` (one line)."""

    def __init__(self, path: str, cause, note: str = ""):
        self.path = path
        self.cause = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause)
        super().__init__(f"cannot write {path}: {self.cause}" + (f" ({note})" if note else ""))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_quietly(path: str) -> None:
    """Remove a file or folder if it is there; a failure is ignored (it is only left-over temp data)."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.remove(path)
    except OSError:
        pass


@contextmanager
def replacing(path: str, suffix: str = ""):
    """Yield a fresh temp file name beside `path`; when the block completes, that file replaces
    `path` (atomic within one filesystem).  Whatever happens, no temp file stays behind, and an
    OSError of the block or the rename becomes WriteError(path)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=directory)
        os.close(fd)
    except OSError as e:
        raise WriteError(path, e) from None
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(path, e) from None
    finally:
        remove_quietly(tmp)


@contextmanager
def staging_folder(path: str):
    """Yield a fresh temp folder beside `path`, for writers that choose their own file names
    (ms.export); the block moves its result over `path` with os.replace.  The folder is removed
    whatever happens, and an OSError becomes WriteError(path)."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=directory)
    except OSError as e:
        raise WriteError(path, e) from None
    try:
        yield tmp
    except OSError as e:
        raise WriteError(path, e) from None
    finally:
        remove_quietly(tmp)


def write_atomic(path: str, data, mode: str = "w") -> None:
    """Write `data` (str, or bytes with mode "wb") to `path` atomically."""
    with replacing(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual mode of a new file


def user_cache_folder(name: str) -> str:
    """The project's folder `name` under the user's cache ($XDG_CACHE_HOME, else ~/.cache), for what
    is built once per machine and reused across runs (compiled kernels)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "conformer-ms", name)


def write_json_atomic(path: str, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")
