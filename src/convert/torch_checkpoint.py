"""Read PyTorch checkpoints (`torch.save` files, zip or legacy format) into NumPy, without torch: the
pickle is read by an unpickler whose `find_class` resolves only an allow-list of torch/collections
globals, each to a local stand-in that builds NumPy arrays, so any other global raises
UnsafeCheckpointError before it can run.  Tensors become C-contiguous arrays (bfloat16 widened to
float32), torch dtypes their names ("float16")."""
import collections
import functools
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
from numpy.lib.stride_tricks import as_strided

from src.errors import ConformerError

__all__ = ["load_torch_checkpoint", "UnsafeCheckpointError", "CheckpointFormatError"]


class UnsafeCheckpointError(ConformerError, ValueError):
    """The checkpoint's pickle asks for a global outside the allow-list."""


class CheckpointFormatError(ConformerError, ValueError):
    """Not a PyTorch checkpoint, or corrupt, truncated or using an unsupported feature."""


# numpy type of each torch dtype's elements on disk (byte order is applied on read).
# numpy has no bfloat16: its 16-bit patterns are read as uint16 and widened to float32.
_DTYPES = {
    "float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "u2",
    "complex128": "c16", "complex64": "c8",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1",
    "uint64": "u8", "uint32": "u4", "uint16": "u2", "uint8": "u1", "bool": "?",
}
# Typed storage classes named in persistent ids, by the dtype of their elements.
_STORAGE_CLASSES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


def _disk_dtype(dtype, byteorder="little"):
    if dtype not in _DTYPES:
        raise CheckpointFormatError(f"unsupported tensor dtype {dtype!r}")
    return np.dtype(_DTYPES[dtype]).newbyteorder("<" if byteorder == "little" else ">")


class _Storage:
    """The raw bytes of one torch storage.

    Decoding waits for the first tensor that uses the storage because an
    UntypedStorage (see _rebuild_tensor_v3) only learns its element type there.
    """

    def __init__(self, raw, dtype, byteorder):
        self.raw, self.dtype, self.byteorder = raw, dtype, byteorder
        self._arrays = {}  # decoded once per dtype, then reused by every tensor viewing it

    def as_array(self, dtype=None):
        """The storage as a 1-D array of `dtype` (default: its own), read-only."""
        dtype = dtype or self.dtype
        if dtype not in self._arrays:
            disk = _disk_dtype(dtype, self.byteorder)
            if len(self.raw) % disk.itemsize:
                raise CheckpointFormatError(f"{len(self.raw)}-byte storage cannot hold {dtype} elements")
            array = np.frombuffer(self.raw, disk)
            if dtype == "bfloat16":
                # a bfloat16 is the upper half of the float32 with the same value
                array = (array.astype(np.uint32) << 16).view(np.float32)
            self._arrays[dtype] = array
        return self._arrays[dtype]


def _rebuild_tensor(storage, storage_offset, size, stride, dtype=None):
    data = storage.as_array(dtype)
    size, stride = tuple(size), tuple(stride)
    native = data.dtype.newbyteorder("=")
    if len(size) != len(stride) or min(size + stride + (storage_offset,)) < 0:
        raise CheckpointFormatError(
            f"invalid tensor layout: size {size}, stride {stride}, offset {storage_offset}")
    if 0 in size:
        return np.zeros(size, native)
    # as_strided does no bounds checking: without this a crafted file could read
    # memory beyond the storage.
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= data.size:
        raise CheckpointFormatError(f"tensor of size {size} reaches past its {data.size}-element storage")
    view = as_strided(data[storage_offset:], size, [s * data.itemsize for s in stride], writeable=False)
    # astype copies: the result is contiguous, native-endian and shares no memory
    # with other tensors cut from the same storage.
    return view.astype(native, order="C")


def _apply_metadata(array, metadata):
    # torch keeps conj() and some neg() views lazy: the data is untouched and a flag is saved.
    if metadata and metadata.get("conj"):
        array = np.conj(array)
    if metadata and metadata.get("neg"):
        array = np.negative(array)
    return array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    return _apply_metadata(_rebuild_tensor(storage, storage_offset, size, stride), metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype,
                       metadata=None):
    # Used for dtypes without a typed storage class (uint16/32/64): the storage
    # is an UntypedStorage of bytes and the element type comes separately.
    return _apply_metadata(_rebuild_tensor(storage, storage_offset, size, stride, dtype), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    # A Parameter is just its tensor here; requires_grad, hooks and python
    # attributes (state, from _rebuild_parameter_with_state) mean nothing to numpy.
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "UntypedStorage"): "uint8",
    ("torch.storage", "UntypedStorage"): "uint8",
    **{("torch", name): dtype for name, dtype in _STORAGE_CLASSES.items()},
    **{("torch", dtype): dtype for dtype in _DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, load_storage=None):
        super().__init__(file)
        self._load_storage = load_storage  # (dtype, key, numel) -> _Storage
        self._storages = {}  # key -> _Storage: tensors sharing a storage share it here too

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise UnsafeCheckpointError(f"refusing to load global {module}.{name}")
        target = _ALLOWED[module, name]
        # A pickle can set attributes on any object it holds (BUILD); hand out a
        # fresh wrapper so it cannot alter our functions (e.g. their __defaults__)
        # for later loads.
        return functools.partial(target) if callable(target) else target

    def persistent_load(self, pid):
        # zip: ('storage', dtype, key, location, numel); legacy appends view_metadata
        if not (self._load_storage and isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise CheckpointFormatError(f"unsupported persistent id {pid!r:.80}")
        _, dtype, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise CheckpointFormatError("storage views (files from torch < 0.4) are not supported")
        if key not in self._storages:
            storage = self._load_storage(dtype, key, numel)
            found = storage.as_array().size
            if found != numel:
                raise CheckpointFormatError(f"storage {key} holds {found} elements, expected {numel}")
            self._storages[key] = storage
        return self._storages[key]


def _unpickle(file, load_storage=None):
    return _Unpickler(file, load_storage).load()


def _load_zip(file):
    with zipfile.ZipFile(file) as archive:
        # The top folder is named after the file torch.save wrote; only the layout below it is fixed.
        pickles = [name for name in archive.namelist() if name == "data.pkl" or name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointFormatError("not a PyTorch checkpoint (zip archive without one data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            byteorder = archive.read(prefix + "byteorder").decode().strip()
        except KeyError:
            byteorder = "little"  # files without it predate big-endian support in torch.save
        if byteorder not in ("little", "big"):
            raise CheckpointFormatError(f"unknown byteorder {byteorder!r}")

        def load_storage(dtype, key, numel):
            try:
                return _Storage(archive.read(f"{prefix}data/{key}"), dtype, byteorder)
            except KeyError:
                raise CheckpointFormatError(f"storage data/{key} is missing") from None

        return _unpickle(io.BytesIO(archive.read(pickles[0])), load_storage)


def _read_exactly(file, size):
    data = file.read(size) if size >= 0 else b""
    if len(data) != size:
        raise CheckpointFormatError("truncated (storage data ends early)")
    return data


def _load_legacy(file):
    try:
        magic = _unpickle(file)
    except UnsafeCheckpointError:
        raise
    except Exception:  # whatever else failed to parse, it is not a legacy torch file
        magic = None
    if not (isinstance(magic, int) and magic == _LEGACY_MAGIC):
        raise CheckpointFormatError(
            "not a PyTorch checkpoint (neither a torch zip archive nor a legacy torch.save file)")
    if _unpickle(file) != _LEGACY_PROTOCOL:
        raise CheckpointFormatError("unsupported legacy torch.save protocol version")
    _unpickle(file)  # sys_info: nothing in it matters, torch writes legacy storages little-endian on any host

    # The storages follow the data pickle, but their element sizes are only
    # known from it: a first pass over zero-filled storages collects the dtypes.
    data_start = file.tell()
    dtypes = {}

    def scan_storage(dtype, key, numel):
        dtypes[key] = dtype
        return _Storage(bytes(numel * _disk_dtype(dtype).itemsize), dtype, "little")

    _unpickle(file, scan_storage)
    storages = {}
    for key in _unpickle(file):
        (numel,) = struct.unpack("<q", _read_exactly(file, 8))
        raw = _read_exactly(file, numel * _disk_dtype(dtypes[key]).itemsize)
        storages[key] = _Storage(raw, dtypes[key], "little")
    file.seek(data_start)
    return _unpickle(file, lambda dtype, key, numel: storages[key])


def load_torch_checkpoint(path) -> dict:
    """Load a ``torch.save`` file without torch and without running code from it.

    Returns the saved object (usually a dict) with numpy arrays in place of
    tensors. Raises UnsafeCheckpointError (the pickle names a global outside the
    allow-list) or CheckpointFormatError (a file that cannot be read, or anything
    else wrong with it), each naming the file.
    """
    source = os.fspath(path)
    try:
        file = open(source, "rb")  # pylint: disable=consider-using-with (closed by the with below)
    except OSError as error:
        raise CheckpointFormatError(f"cannot read {source}: {error.strerror or error}") from None
    with file:
        is_zip = file.read(2) == b"PK"
        file.seek(0)
        try:
            return _load_zip(file) if is_zip else _load_legacy(file)
        # the parsers' messages say what is wrong; name the file here, once
        except UnsafeCheckpointError as error:
            raise UnsafeCheckpointError(f"{error} from {source}") from None
        except CheckpointFormatError as error:
            raise CheckpointFormatError(f"{source}: {error}") from None
        except (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, struct.error,
                ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as error:
            raise CheckpointFormatError(
                f"{source}: corrupt or truncated checkpoint ({type(error).__name__}: {error})") from error
