"""tools/fashion_mnist.py: the idx reader and the ImageFolder writer, on tiny synthetic idx files."""
import gzip
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

from tools import fashion_mnist as fm
from src.data.folder import scan_image_folder


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """The idx encoding: 0, 0, type byte, ndim, big-endian uint32 dims, big-endian data."""
    dtype = np.dtype(fm._IDX_DTYPES[type_code])
    return (bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.astype(dtype).tobytes())


def _write(path, array, type_code=0x08, gz=True):
    data = _idx_bytes(array, type_code)
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)
    return str(path)


def _fake_source(folder, n_train=30, n_val=20, size=(5, 4), seed=0):
    """The four Fashion-MNIST files with random pixels and labels 0..9 (every class present)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        images = rng.integers(0, 256, (n, *size), dtype=np.uint8)
        labels = (np.arange(n) % 10)[rng.permutation(n)].astype(np.uint8)
        _write(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("type_code", sorted(fm._IDX_DTYPES))
def test_read_idx_round_trips_every_type(tmp_path, type_code):
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4)
    if type_code == 0x08:
        array = np.abs(array)
    path = _write(tmp_path / "a.idx.gz", array, type_code)
    out = fm.read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_plain_file_and_multibyte_dims(tmp_path):
    array = np.arange(300 * 2, dtype=np.uint8).reshape(300, 2)  # 300 needs more than one byte
    np.testing.assert_array_equal(fm.read_idx(_write(tmp_path / "a.idx", array, gz=False)), array)


@pytest.mark.parametrize("data, message", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown idx data type"),
    (b"\x00\x00\x08\x02\x00\x00\x00\x01", "truncated header"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x00\x01", "needs 3"),
])
def test_read_idx_rejects_malformed_files(tmp_path, data, message):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(data)
    with pytest.raises(fm.IdxError, match=message):
        fm.read_idx(str(path))


def test_read_idx_rejects_a_broken_gzip(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(fm.IdxError, match="cannot read"):
        fm.read_idx(str(path))


def test_folder_names_sort_in_label_order_and_are_safe():
    names = fm.folder_names()
    assert names[0] == "0_T-shirt-top" and names[9] == "9_Ankle_boot"
    assert sorted(names) == names
    assert all("/" not in n and " " not in n for n in names)
    assert sorted(fm.folder_names([str(i) for i in range(12)])) == fm.folder_names([str(i) for i in range(12)])


def test_prepare_writes_an_image_folder_with_official_labels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    arrays = _fake_source(src)
    out = str(tmp_path / "out")
    counts = fm.prepare_fashion_mnist(out, str(src), log=lambda m: None)
    assert counts == {"train": 30, "val": 20, "skipped": False}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        classes, samples = scan_image_folder(os.path.join(out, split))
        assert classes == fm.folder_names()
        images, labels = arrays[prefix]
        assert len(samples) == len(labels)
        for path, label in samples:  # the folder's class index is the official label
            i = int(os.path.splitext(os.path.basename(path))[0])
            assert label == labels[i]
            with Image.open(path) as img:
                assert img.mode == "L"
                np.testing.assert_array_equal(np.asarray(img), images[i])  # PNG: lossless, unresized
    marker = json.load(open(os.path.join(out, fm.MARKER)))
    assert marker["counts"] == {"train": 30, "val": 20} and marker["classes"] == list(fm.CLASSES)
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_prepare_is_idempotent_and_redoes_an_incomplete_tree(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _fake_source(src)
    out = str(tmp_path / "out")
    fm.prepare_fashion_mnist(out, str(src), log=lambda m: None)
    some_image = scan_image_folder(os.path.join(out, "train"))[1][0][0]
    mtime = os.path.getmtime(some_image)
    assert fm.prepare_fashion_mnist(out, str(src), log=lambda m: None)["skipped"] is True
    assert os.path.getmtime(some_image) == mtime  # nothing rewritten
    os.remove(some_image)  # a damaged tree is written again
    again = fm.prepare_fashion_mnist(out, str(src), log=lambda m: None)
    assert again["skipped"] is False and os.path.exists(some_image)
    # another request (a per-class subset) is written again too
    sub = fm.prepare_fashion_mnist(out, str(src), train_per_class=2, val_per_class=1, log=lambda m: None)
    assert sub == {"train": 20, "val": 10, "skipped": False}
    assert fm.count_images(os.path.join(out, "train")) == 20


def test_per_class_subset_takes_the_first_of_each_class_in_order():
    labels = np.array([1, 0, 1, 1, 0, 2, 0])
    np.testing.assert_array_equal(fm.per_class_subset(labels, 2), [0, 1, 2, 4, 5])
    np.testing.assert_array_equal(fm.per_class_subset(labels, -1), np.arange(7))


def test_missing_source_says_how_to_get_it(tmp_path):
    assert not fm.have_source(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fm.prepare_fashion_mnist(str(tmp_path / "out"), str(tmp_path), log=lambda m: None)


def test_mismatched_images_and_labels_are_refused(tmp_path):
    _fake_source(tmp_path)
    _write(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(fm.IdxError, match="do not match"):
        fm.prepare_fashion_mnist(str(tmp_path / "out"), str(tmp_path), log=lambda m: None)


def test_digits_fallback_writes_every_class(tmp_path):
    pytest.importorskip("sklearn")
    counts = fm.prepare_digits(str(tmp_path / "digits"), log=lambda m: None)
    assert counts["train"] + counts["val"] == 1797 and counts["skipped"] is False
    classes, val = scan_image_folder(str(tmp_path / "digits" / "val"))
    assert classes == [str(k) for k in range(10)] and len(val) == counts["val"]
    assert fm.prepare_digits(str(tmp_path / "digits"), log=lambda m: None)["skipped"] is True
