"""Finding the images of DATA and decoding them ahead in worker processes, in batches: the input side of
every inference script (MindSpore-free).  Every image goes through src/data/preprocess.py (`load_rgb` +
`eval_transform`), as in eval.py."""
import argparse
import os
import sys
from functools import partial

import numpy as np

from src.data.batch_workers import BatchWorkers, worker_batches
from src.data.eval_batches import EvalBatches
from src.data.preprocess import IMAGE_EXTENSIONS, eval_transform, is_image_file
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
                        help="images decoded ahead by min(N, CPUs) worker processes started per run; 0 = decode "
                             "inline (default: 16)")


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


class _SkipWarnings:
    """Records an unreadable image in `errors` {path: reason} with one warning line on stderr."""

    def __init__(self, errors: dict, prog: str):
        self.errors, self.prog = errors, prog

    def record(self, path: str, reason: str) -> None:
        self.errors[path] = reason
        print(f"{self.prog}: warning: skipped {path}: {reason}", file=sys.stderr, flush=True)


def _decoded_chunks(paths: list, cfg, errors: dict, prog: str):
    """(images [n, 3, S, S], indices into `paths`) of the readable images, in order, in chunks: decoded
    inline (--prefetch 0, or one image), or ahead by min(prefetch, CPUs) worker processes started for
    this call (src/data/batch_workers.py), outside this process's interpreter lock, about `prefetch`
    images in flight."""
    inline = cfg.prefetch == 0 or len(paths) == 1
    workers = 1 if inline else min(cfg.prefetch, os.cpu_count() or 1)
    chunk = max(1, cfg.prefetch // (2 * workers))  # each worker computes one chunk and holds one more
    transform = partial(eval_transform, image_size=cfg.image_size, crop_pct=cfg.crop_pct)
    indices = np.arange(len(paths))
    source = EvalBatches(paths, indices, indices, transform, chunk, _SkipWarnings(errors, prog))
    if inline:
        for b in range(len(source)):
            batch = source.deliver(source.compute(b))
            if len(batch[0]):
                yield batch
        return
    pool = BatchWorkers(workers)
    try:
        yield from worker_batches(source, pool)
    finally:
        pool.close()


def image_batches(paths: list, batch_size: int, cfg, errors: dict, prog: str):
    """Yield (paths, images [B, 3, S, S]) of the readable images, full batches but the last; unreadable
    ones go to `errors` {path: reason} and get one warning line on stderr."""
    images, indices = [], []
    for chunk, chunk_indices in _decoded_chunks(paths, cfg, errors, prog):
        images.append(chunk)
        indices.append(chunk_indices)
        if sum(map(len, indices)) >= batch_size:
            images, indices = np.concatenate(images), np.concatenate(indices)
            while len(indices) >= batch_size:
                yield [paths[i] for i in indices[:batch_size]], images[:batch_size]
                images, indices = images[batch_size:], indices[batch_size:]
            images, indices = [images], [indices]
    if sum(map(len, indices)):
        yield [paths[i] for i in np.concatenate(indices)], np.concatenate(images)
