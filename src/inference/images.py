"""Finding the images of DATA and decoding them ahead in threads, in batches: the input side of every
inference script (MindSpore-free).  Every image goes through src/data/preprocess.py (`load_rgb` +
`eval_transform`), as in eval.py."""
import argparse
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from src.data.preprocess import IMAGE_EXTENSIONS, ImageReadError, eval_transform, is_image_file, load_rgb
from src.errors import ConformerError


class InferenceError(ConformerError, RuntimeError):
    """A problem that stops an inference script, reported as one line."""


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


non_negative_int = _int_at_least(0)


def add_data_args(parser, data_help: str, data_default: bool = False) -> None:
    """Options of every inference script: DATA (optional if `data_default`) and decoding ahead; the batch is
    the config's batch_size."""
    parser.add_argument("data", metavar="DATA", nargs="?" if data_default else None, default="", help=data_help)
    parser.add_argument("--prefetch", type=non_negative_int, default=16,
                        help="images decoded ahead in a thread pool; 0 = decode inline (default: 16)")


def find_images(data: str) -> list:
    """Absolute paths of the images at `data`: that file, or every image file below that folder, sorted.

    A file named explicitly is taken whatever its extension (decoding decides); in
    a folder only image extensions (any case) count, so notes.txt is not an error.
    """
    if os.path.isfile(data):
        return [os.path.abspath(data)]
    if not os.path.isdir(data):
        raise InferenceError(f"no such file or directory: {data}")
    # followlinks: the same files as the dataset scan (src/data/folder.py)
    paths = [os.path.join(root, name) for root, _, names in os.walk(data, followlinks=True) for name in names
             if is_image_file(name)]
    if not paths:
        raise InferenceError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) in {data}")
    return sorted(os.path.abspath(p) for p in paths)


def dataset_classes(root: str) -> list:
    """Class names of an ImageFolder dataset: its sorted subfolder names (torchvision's order)."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise InferenceError(f"{root} has no class subfolders")
    return classes


def load_class_names(source: str) -> list:
    """Class names from a text file (one per line) or a dataset folder (sorted subfolders)."""
    if os.path.isdir(source):
        return dataset_classes(source)
    if not os.path.isfile(source):
        raise InferenceError(f"class names: no such file or directory: {source}")
    try:
        with open(source, encoding="utf-8") as f:
            names = [line.strip() for line in f.read().splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise InferenceError(f"class names: cannot read {source} ({e})") from None
    while names and not names[-1]:
        names.pop()  # a trailing blank line is not a class
    if not names:
        raise InferenceError(f"class names: {source} is empty")
    return names


def _load(path: str, image_size: int, crop_pct: float):
    """(path, CHW array or None, reason or None) -- runs in the decoding threads."""
    try:
        return path, eval_transform(load_rgb(path), image_size, crop_pct), None
    except ImageReadError as e:
        return path, None, str(e)


def decode_ahead(paths: list, image_size: int, crop_pct: float, prefetch: int):
    """Yield `_load` results in the order of `paths`, keeping up to `prefetch` decoding in threads.

    PIL releases the GIL while decoding and resizing, so threads overlap it with the forward pass.
    """
    if prefetch == 0:
        for path in paths:
            yield _load(path, image_size, crop_pct)
        return
    with ThreadPoolExecutor(max_workers=min(prefetch, os.cpu_count() or 1)) as pool:
        pending = deque()
        for path in paths:
            pending.append(pool.submit(_load, path, image_size, crop_pct))
            if len(pending) > prefetch:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def image_batches(paths: list, batch_size: int, cfg, errors: dict, prog: str):
    """Yield (paths, images [B, 3, S, S]) of the readable images; unreadable ones go to `errors`
    {path: reason} and get one warning line on stderr."""
    batch_paths, arrays = [], []
    for path, array, reason in decode_ahead(paths, cfg.image_size, cfg.crop_pct, cfg.prefetch):
        if reason is not None:
            errors[path] = reason
            print(f"{prog}: warning: skipped {path}: {reason}", file=sys.stderr, flush=True)
            continue
        batch_paths.append(path)
        arrays.append(array)
        if len(arrays) == batch_size:
            yield batch_paths, np.stack(arrays)
            batch_paths, arrays = [], []
    if arrays:
        yield batch_paths, np.stack(arrays)

