"""Fashion-MNIST (or scikit-learn's digits) as an ImageFolder tree for the CPU demo.

    .venv/bin/python tools/fashion_mnist.py --out demo_out/data/fashion-mnist [--src /usr/share/datasets/fashion-mnist]
                                              [--train_per_class N] [--val_per_class N]

Reads the four idx files (gzipped or not) with NumPy and writes each 28x28 image unchanged as
`<out>/{train,val}/<k>_<class name>/<n>.png`, with `<k>` the official label and `<n>` the image's
index in its idx file, so sorted names give the official class indices and the idx order.  Idempotent
and kill-safe: each split is written into a temporary folder and renamed into place, and
`<out>/prepared.json` lets a repeated call return at once.  MindSpore-free (NumPy + PIL).
"""
import argparse
import gzip
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from src.errors import ConformerError  # noqa: E402
from src.io import TEMP_PREFIX, WriteError, write_atomic  # noqa: E402

DEFAULT_SRC = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist
HOW_TO_GET = ("Fashion-MNIST not found in {src}: `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu) "
              "or download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist "
              "into a folder and pass it with --src")
# The official label list (zalandoresearch/fashion-mnist README), index = label.
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = {  # our split -> idx file prefix
    "train": "train",
    "val": "t10k",
}
MARKER = "prepared.json"
# idx type byte -> big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT")
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxError(ConformerError, ValueError):
    """A file that is not a well-formed idx file; the message names it."""


def read_idx(path: str) -> np.ndarray:
    """An idx file (gzipped when it ends in .gz) -> NumPy array of its shape and type (native byte order).

    Header: two zero bytes, a type byte, the number of dimensions, then one big-endian uint32
    per dimension; the data follow in row-major order.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError when truncated
        raise IdxError(f"{path}: cannot read ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{path}: not an idx file (bad magic number)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise IdxError(f"{path}: unknown idx data type 0x{type_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{path}: truncated header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise IdxError(f"{path}: {len(data) - header} data bytes, the header {shape} needs {expected}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def folder_names(classes=CLASSES) -> list:
    """Class folder names that sort in label order: '<label>_<name>' ('/' and ' ' -> '-' and '_')."""
    width = len(str(len(classes) - 1))
    return [f"{k:0{width}d}_{name.replace('/', '-').replace(' ', '_')}" for k, name in enumerate(classes)]


def load_split(src: str, split: str) -> tuple:
    """(images uint8 [N, H, W], labels int [N]) of our split 'train' or 'val' (= the idx 't10k' files)."""
    prefix = IDX_FILES[split]
    images = read_idx(_find(src, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(src, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise IdxError(f"{src}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def _find(src: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(src, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{os.path.join(src, stem)}.gz not found")


def have_source(src: str) -> bool:
    """True when `src` holds the four idx files (gzipped or not)."""
    try:
        for split in IDX_FILES.values():
            for kind in ("images-idx3", "labels-idx1"):
                _find(src, f"{split}-{kind}-ubyte")
    except FileNotFoundError:
        return False
    return True


def per_class_subset(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of each label, in idx order (-1 = all)."""
    if per_class < 0:
        return np.arange(len(labels))
    return np.sort(np.concatenate([np.flatnonzero(labels == k)[:per_class] for k in np.unique(labels)]))


def write_image_folder(root: str, images: np.ndarray, labels: np.ndarray, class_folders: list,
                       indices=None, workers: int = 0) -> int:
    """Write images[i] (uint8 [H, W] grayscale or [H, W, 3] RGB) as root/<class_folders[labels[i]]>/<i>.png
    for i in `indices` (default all); returns the number written. Every class folder is created, even
    one without images. `workers` threads encode PNGs (PIL releases the GIL; 0 = os.cpu_count())."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    width = max(5, len(str(len(images) - 1)))
    for name in class_folders:
        os.makedirs(os.path.join(root, name), exist_ok=True)

    def write(i):
        path = os.path.join(root, class_folders[int(labels[i])], f"{i:0{width}d}.png")
        Image.fromarray(np.ascontiguousarray(images[i])).save(path, format="PNG", compress_level=1)

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for _ in pool.map(write, indices.tolist(), chunksize=256):
            pass
    return len(indices)


def count_images(root: str) -> int:
    """PNG files in the class folders of root (0 when root is missing)."""
    if not os.path.isdir(root):
        return 0
    return sum(sum(1 for f in os.scandir(entry.path) if f.name.endswith(".png"))
               for entry in os.scandir(root) if entry.is_dir())


def _is_complete(out: str, request: dict) -> bool:
    path = os.path.join(out, MARKER)
    if not os.path.isfile(path):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            done = json.load(f)
    except (OSError, ValueError):
        return False
    if done.get("request") != request:
        return False
    return all(count_images(os.path.join(out, split)) == done["counts"].get(split) for split in IDX_FILES)


def _write_splits(out: str, request: dict, splits: dict, class_folders: list, classes: list, log) -> dict:
    """splits: name -> (images, labels, indices). Each split goes to a temp folder, then is renamed;
    the marker is written last (atomically), so an interrupted run is redone, never half-used."""
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, MARKER)):
        os.remove(os.path.join(out, MARKER))
    counts = {}
    for split, (images, labels, indices) in splits.items():
        final, tmp = os.path.join(out, split), os.path.join(out, f"{TEMP_PREFIX}{split}")
        for stale in (tmp, final):
            if os.path.exists(stale):
                shutil.rmtree(stale)
        start = time.time()
        counts[split] = write_image_folder(tmp, images, labels, class_folders, indices)
        os.rename(tmp, final)
        log(f"wrote {counts[split]} {split} images to {final} ({time.time() - start:.1f} s)")
    marker = {"request": request, "counts": counts, "classes": classes, "class_folders": class_folders}
    write_atomic(os.path.join(out, MARKER), json.dumps(marker, indent=1))
    return counts


def prepare_fashion_mnist(out: str, src: str = DEFAULT_SRC, train_per_class: int = -1, val_per_class: int = -1,
                          log=print) -> dict:
    """Write the ImageFolder tree (module docstring) unless `out` already holds it; returns
    {'train': N, 'val': M, 'skipped': bool}. Raises FileNotFoundError when `src` lacks the files."""
    request = {"dataset": "fashion-mnist", "train_per_class": train_per_class, "val_per_class": val_per_class}
    if _is_complete(out, request):
        with open(os.path.join(out, MARKER), encoding="utf-8") as f:
            counts = json.load(f)["counts"]
        log(f"{out} already holds Fashion-MNIST ({counts['train']} train, {counts['val']} val images): kept")
        return dict(counts, skipped=True)
    if not have_source(src):
        raise FileNotFoundError(HOW_TO_GET.format(src=src))
    splits = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        images, labels = load_split(src, split)
        if labels.max() >= len(CLASSES):
            raise IdxError(f"{src}: label {labels.max()} in {split}, Fashion-MNIST has {len(CLASSES)} classes")
        splits[split] = (images, labels, per_class_subset(labels, per_class))
    counts = _write_splits(out, request, splits, folder_names(), list(CLASSES), log)
    return dict(counts, skipped=False)


def prepare_digits(out: str, val_fraction: float = 0.2, log=print) -> dict:
    """The fallback: scikit-learn's 1,797 handwritten digits (8x8, 0..16, shipped in its wheel) as the
    same tree (classes '0'..'9'); the last `val_fraction` of each class (in sklearn's order) is val."""
    request = {"dataset": "sklearn-digits", "val_fraction": val_fraction}
    if _is_complete(out, request):
        with open(os.path.join(out, MARKER), encoding="utf-8") as f:
            counts = json.load(f)["counts"]
        log(f"{out} already holds the digits ({counts['train']} train, {counts['val']} val images): kept")
        return dict(counts, skipped=True)
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = np.clip(digits.images / 16.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    labels = digits.target
    train_idx, val_idx = [], []
    for k in range(10):
        members = np.flatnonzero(labels == k)
        n_val = int(round(len(members) * val_fraction))
        train_idx.append(members[:len(members) - n_val])
        val_idx.append(members[len(members) - n_val:])
    splits = {"train": (images, labels, np.sort(np.concatenate(train_idx))),
              "val": (images, labels, np.sort(np.concatenate(val_idx)))}
    names = [str(k) for k in range(10)]
    counts = _write_splits(out, request, splits, names, names, log)
    return dict(counts, skipped=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tools/fashion_mnist.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write train/ and val/ into")
    parser.add_argument("--src", default=DEFAULT_SRC, help="folder with the idx files (default: %(default)s)")
    parser.add_argument("--train_per_class", type=int, default=-1,
                        help="first N training images of each class (default: -1 = all 6,000)")
    parser.add_argument("--val_per_class", type=int, default=-1,
                        help="first N test images of each class (default: -1 = all 1,000)")
    parser.add_argument("--digits", action="store_true",
                        help="write scikit-learn's digits instead (the fallback without Fashion-MNIST)")
    args = parser.parse_args(argv)
    try:
        if args.digits:
            prepare_digits(args.out)
        else:
            prepare_fashion_mnist(args.out, args.src, args.train_per_class, args.val_per_class)
    except (FileNotFoundError, IdxError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
