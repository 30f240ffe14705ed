"""src/convert/torch_checkpoint.py against files written by real torch (no torch needed here).

The fixtures come from tests/fixtures/torch_ckpt/make_torch_ckpt_fixture.py,
expected.npz holds every tensor as torch itself read it back.
"""
import collections
import io
import os
import pickle
import pickletools
import struct
import subprocess
import zipfile

import numpy as np
import pytest

from conftest import FIXTURES as TEST_FIXTURES
from src.convert import torch_checkpoint
from src.convert.torch_checkpoint import CheckpointFormatError, UnsafeCheckpointError, load_torch_checkpoint

FIXTURES = os.path.join(TEST_FIXTURES, "torch_ckpt")
ZIP = os.path.join(FIXTURES, "ckpt_zip.pt")
LEGACY = os.path.join(FIXTURES, "ckpt_legacy.pt")
BIG_ENDIAN = os.path.join(FIXTURES, "ckpt_bigendian.pt")


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(FIXTURES, "expected.npz")) as npz:
        return {key: npz[key] for key in npz.files}


def arrays(obj, path=""):
    """{path: array} for every array in nested dicts/lists/tuples (paths as in expected.npz)."""
    if isinstance(obj, np.ndarray):
        return {path: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    found = {}
    for key, value in items:
        found.update(arrays(value, f"{path}/{key}" if path else str(key)))
    return found


def assert_same(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("path, missing", [(ZIP, set()), (LEGACY, {"model/u16"})])
def test_every_tensor_matches_torch(path, missing, expected):
    found = arrays(load_torch_checkpoint(path))
    assert set(found) == set(expected) - missing
    for key, array in found.items():
        assert_same(array, expected[key])
        assert array.flags.c_contiguous and array.flags.writeable, key


@pytest.mark.parametrize("path", [ZIP, LEGACY])
def test_containers_and_plain_values(path):
    ckpt = load_torch_checkpoint(path)
    assert type(ckpt["model"]) is collections.OrderedDict
    assert list(ckpt["model"])[:3] == ["f32", "f64", "f16"]
    assert ckpt["epoch"] == 7 and ckpt["arch"] == "conformer_tiny_patch16" and ckpt["lr"] == 1e-3
    assert ckpt["milestones"] == [30, 60] and ckpt["shape"] == (3, 4)
    assert ckpt["dtype"] == "bfloat16"  # torch dtype objects come back as their names


def test_views_of_one_storage_do_not_alias():
    model = load_torch_checkpoint(ZIP)["model"]
    np.testing.assert_array_equal(model["shared_a"].ravel()[4:], model["shared_b"][:2])  # the overlap
    assert not np.shares_memory(model["shared_a"], model["shared_b"])
    assert not np.shares_memory(model["transposed"], model["sliced"])


def test_big_endian_zip(expected):
    found = load_torch_checkpoint(BIG_ENDIAN)
    assert list(found) == ["f32", "f64", "f16", "bf16", "i64", "flags", "conj"]
    for key, array in found.items():
        assert array.dtype.isnative, key
        assert_same(array, expected[f"model/{key}"])


# --- malicious files ---------------------------------------------------------

class _Exploit:
    """Pickles as a call of `func(*args)`: what a hostile checkpoint would contain."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _zip_checkpoint(path, data_pkl, storages=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        for key, raw in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", raw)


def test_zip_with_os_system_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    _zip_checkpoint(path, pickle.dumps({"model": _Exploit(os.system, f"touch {marker}")}, protocol=2))
    refused = r"refusing to load global (os|posix)\.system from .*evil\.pt"
    with pytest.raises(UnsafeCheckpointError, match=refused):
        load_torch_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, 5])
@pytest.mark.parametrize("func, args", [
    (eval, ("1",)),
    (getattr, ("text", "upper")),
    (subprocess.Popen, (["true"],)),
])
def test_other_globals_are_refused(tmp_path, func, args, protocol):
    # protocols < 3 spell some modules the Python 2 way (__builtin__.eval): match the name only
    path = tmp_path / "evil.pt"
    _zip_checkpoint(path, pickle.dumps(_Exploit(func, *args), protocol=protocol))
    with pytest.raises(UnsafeCheckpointError, match=rf"global \S+\.{func.__name__} from "):
        load_torch_checkpoint(path)


def test_legacy_file_with_os_system_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_legacy.pt"
    header = [0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(part, protocol=2) for part in header)
                     + pickle.dumps(_Exploit(os.system, f"touch {marker}"), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match=r"(os|posix)\.system"):
        load_torch_checkpoint(path)
    assert not marker.exists()


def _tensor_pickle(size, stride, offset=0):
    """data.pkl of one float32 tensor on storage '0', as torch would write it (protocol 0 text)."""
    def tuple_of(values):
        return "(" + "".join(f"I{v}\n" for v in values) + "t"

    return (
        "ctorch._utils\n_rebuild_tensor_v2\n("
        "(S'storage'\nctorch\nFloatStorage\nS'0'\nS'cpu'\nI4\ntQ"
        f"I{offset}\n{tuple_of(size)}{tuple_of(stride)}I00\nccollections\nOrderedDict\n(tRtR."
    ).encode()


def test_handwritten_tensor_pickle_loads(tmp_path):
    path = tmp_path / "ok.pt"
    _zip_checkpoint(path, _tensor_pickle((2, 2), (1, 2)), {"0": np.arange(4, dtype="<f4").tobytes()})
    np.testing.assert_array_equal(load_torch_checkpoint(path), [[0, 2], [1, 3]])


@pytest.mark.parametrize("size, stride, offset", [((5,), (1,), 0), ((2, 2), (1, 2), 1), ((2,), (100,), 0)])
def test_tensor_reaching_past_its_storage_is_rejected(tmp_path, size, stride, offset):
    path = tmp_path / "oob.pt"
    _zip_checkpoint(path, _tensor_pickle(size, stride, offset), {"0": np.arange(4, dtype="<f4").tobytes()})
    with pytest.raises(CheckpointFormatError, match="past its 4-element storage"):
        load_torch_checkpoint(path)


def test_pickle_cannot_tamper_with_the_loader_for_later_loads(tmp_path):
    # BUILD sets attributes on an object the pickle holds; aimed at our rebuild
    # function it would make every later load negate its tensors.
    path = tmp_path / "tamper.pt"
    _zip_checkpoint(path, b"ctorch._utils\n_rebuild_tensor_v2\n(N(S'__defaults__'\n((dS'neg'\nI01\nstdtb.")
    with pytest.raises(CheckpointFormatError):
        load_torch_checkpoint(path)
    assert torch_checkpoint._rebuild_tensor_v2.__defaults__ == (None,)


# --- broken and foreign files ------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(CheckpointFormatError, match="cannot read .*nope.pt: No such file"):
        load_torch_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("source", [ZIP, LEGACY])
def test_truncated_file(tmp_path, source):
    data = open(source, "rb").read()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointFormatError, match=r"cut\.pt: .*(truncated|not a zip file)"):
        load_torch_checkpoint(path)


def test_short_storage_in_zip(tmp_path):
    path = tmp_path / "short.pt"
    _zip_checkpoint(path, _tensor_pickle((4,), (1,)), {"0": np.arange(3, dtype="<f4").tobytes()})
    with pytest.raises(CheckpointFormatError, match=r"short\.pt: storage 0 holds 3 elements, expected 4"):
        load_torch_checkpoint(path)


@pytest.mark.parametrize("content", [b"model:\n  name: conformer\n", b"", b"\x00" * 64,
                                     pickle.dumps({"a": 1}, protocol=2)])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError, match=r"config\.yaml: not a PyTorch checkpoint"):
        load_torch_checkpoint(path)


def test_zip_without_data_pkl(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match=r"other\.zip: not a PyTorch checkpoint"):
        load_torch_checkpoint(path)


def test_legacy_storage_count_mismatch(tmp_path):
    # bump the element count in front of the first storage: it no longer matches the pickle
    data = bytearray(open(LEGACY, "rb").read())
    file = io.BytesIO(data)
    for _ in range(5):  # skip the pickles: magic, protocol, sys_info, data, storage keys
        for _ in pickletools.genops(file):
            pass
    (numel,) = struct.unpack_from("<q", data, file.tell())
    struct.pack_into("<q", data, file.tell(), numel + 1)
    path = tmp_path / "bumped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError, match=r"bumped\.pt: "):
        load_torch_checkpoint(path)
