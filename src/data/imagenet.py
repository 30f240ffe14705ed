"""ImageFolder datasets: the official DeiT/timm training recipe and the shared eval transform.

`create_dataset(cfg, split, rank_id, rank_size, ..., epoch=e, skip_batches=k)` returns a batched
pipeline (train: image float32 [B, 3, S, S] and soft-target labels [B, num_classes]; val: image
and int32 labels [B]) whose order, shards and every augmentation draw are a function of (seed,
epoch, position), so a resumed run sees the batches of the uninterrupted one; `SkippedImages`
counts unreadable files and `DatasetError` names a bad folder, CSV row or batch in one line. How
it works (sampling, repeated augmentation, unreadable images, why threads and whole-batch items):
docs/development.md "How it works: the data pipeline".
"""
import logging
import multiprocessing
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import mindspore.dataset as ds
import numpy as np
from PIL import Image

from src.data.augment import Mixup, RandomErasing, RandomResizedCrop, create_auto_augment
from src.data.augment.auto_augment import INTERPOLATIONS
from src.data.folder import DatasetError
from src.data.labels import split_samples
from src.data.preprocess import ImageReadError, eval_transform, load_rgb, normalize

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
_PLACEHOLDER = np.zeros((1, 1, 3), np.uint8)  # stands in for an unreadable image until the filter drops it
_PYTHON_MULTIPROCESSING = False  # threads: PIL releases the GIL (docs/development.md, the data pipeline)


class SkippedImages:
    """Unreadable images a pipeline replaced (train) or dropped (val): `count` (every time, every epoch)
    and `paths` (each file once, in order of its first failure). Each file is warned about once.
    `error`: the DatasetError of a training batch without a readable image, once one was raised
    (see `one_line_errors`)."""

    def __init__(self):
        self.count = 0
        self.paths = []
        self.error = None
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self  # MindSpore deep-copies the pipeline to iterate it: the copies must count here

    def record(self, path: str, reason: str, action: str = "skipping"):
        with self._lock:
            self.count += 1
            if path not in self.paths:
                self.paths.append(path)
                log.warning("%s unreadable image %s: %s", action, path, reason)

    def one_line_errors(self, batches):
        """The rows of `batches` (a training pipeline's iterator); MindSpore re-raises an exception of the
        batch source as a RuntimeError holding its traceback, which this turns back into the one-line
        DatasetError. Errors of the loop body that consumes the rows pass unchanged."""
        try:
            yield from batches
        except RuntimeError:
            if self.error is not None:
                raise self.error from None
            raise


class DecodedImages:
    """Decoded training images kept in memory across epochs, up to `budget_mib` MiB of pixels
    (`cache_decoded_mib`): on a small dataset each file is then decoded once per run instead of once
    per epoch. Images past the budget, and unreadable files, are read every time. Only the decoded
    image is kept (identical to a fresh decode), never an augmented one."""

    def __init__(self, budget_mib: int):
        self.budget = budget_mib * 2 ** 20
        self.used = 0
        self.images = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self  # as SkippedImages: every copy MindSpore makes of the pipeline shares one store

    def load(self, path: str) -> Image.Image:
        img = self.images.get(path)
        if img is None:
            img = load_rgb(path)
            size = img.width * img.height * 3
            with self._lock:
                if path not in self.images and self.used + size <= self.budget:
                    self.images[path] = img
                    self.used += size
        return img


def _subset(samples: list, num: int, key: str, root: str) -> list:
    """num evenly spaced samples of the class-sorted list (-1 = all): the same files on every run and
    rank, each class in proportion (the first num would be the first classes only)."""
    if num == -1:
        return samples
    if num > len(samples):
        raise DatasetError(f"{key} is {num} but {root} has only {len(samples)} images")
    return [samples[i] for i in np.arange(num) * len(samples) // num]


def _workers(requested: int) -> int:
    available = multiprocessing.cpu_count()  # the bound MindSpore checks each op against
    if requested > available:
        log.warning("num_parallel_workers %d > %d CPUs here: using %d per pipeline op",
                    requested, available, available)
    return min(requested, available)


def _shard_order(num: int, shuffle: bool, seed: int, epoch: int, rank_id: int, rank_size: int,
                 repeats: int = 0) -> np.ndarray:
    """This rank's sample indices for `epoch`: all ranks draw the same permutation from (seed, epoch),
    pad it by wrapping to a multiple of rank_size and take every rank_size-th from rank_id.
    repeats >= 2: DeiT's RASampler instead (docs/development.md, the data pipeline)."""
    order = np.random.default_rng([seed, epoch]).permutation(num) if shuffle else np.arange(num)
    if repeats:
        return _repeated_shard(order, repeats, rank_id, rank_size)
    return np.resize(order, -(-num // rank_size) * rank_size)[rank_id::rank_size]  # resize repeats from the start


def _repeated_shard(order: np.ndarray, repeats: int, rank_id: int, rank_size: int) -> np.ndarray:
    """DeiT samplers.py RASampler.__iter__ on a drawn order: each index `repeats` times in a row, padded
    by wrapping to a multiple of rank_size, every rank_size-th from rank_id, cut to
    num_selected_samples = floor(len // 256 * 256 / num_replicas)."""
    num = len(order)
    total = -(-num * repeats // rank_size) * rank_size
    selected = num // 256 * 256 // rank_size
    return np.resize(np.repeat(order, repeats), total)[rank_id::rank_size][:selected]


class _Samples:
    """Random-access source: k -> (sample index int64, class index int32, position int64) of the k-th
    sample in `order`; the map reads the file. `position` numbers the sample within the epoch over all
    ranks (k-th of this rank's shard, after `first` skipped ones): what its augmentation is seeded by."""

    def __init__(self, order: np.ndarray, labels: np.ndarray, first: int = 0, rank_id: int = 0, rank_size: int = 1):
        self.order, self.labels = order, labels
        self.first, self.rank_id, self.rank_size = first, rank_id, rank_size

    def __len__(self):
        return len(self.order)

    def __getitem__(self, k):
        index = self.order[k]
        return np.int64(index), self.labels[index], np.int64((self.first + k) * self.rank_size + self.rank_id)


def sample_rng(seed: int, epoch: int, position: int, what: str = "image") -> random.Random:
    """The random draws of one sample (or, what='batch', of the batch starting at it) in one epoch:
    a function of (seed, epoch, position) only, so neither the number of worker threads nor their
    timing nor a resume changes them. (String seeds hash with SHA-512: the same in every process.)"""
    return random.Random(f"{what}/{seed}/{epoch}/{position}")


class _LoadImage:
    """Map (eval): sample index -> (transform(RGB PIL image), '', index), or for an unreadable file
    (placeholder, reason, index)."""

    def __init__(self, paths: list, transform):
        self.paths, self.transform = paths, transform

    def __call__(self, index):
        try:
            img = load_rgb(self.paths[int(index)])
        except ImageReadError as e:
            return _PLACEHOLDER, np.array(str(e)), index
        return self.transform(img), np.array(""), index


class _KeepReadable:
    """Filter predicate (runs in the main process): False for a failed decode, which it records."""

    def __init__(self, paths: list, skipped: SkippedImages):
        self.paths, self.skipped = paths, skipped

    def __call__(self, error, index) -> bool:
        reason = str(error.item())
        if reason:
            self.skipped.record(self.paths[int(index)], reason)
        return not reason


class _MixBatch:
    """CHW images and labels of one batch, the position of its first sample -> (images [B, 3, S, S],
    soft targets [B, K]); the mixing draws are seeded by (seed, epoch, that position)."""

    def __init__(self, mixup: Mixup, mix: bool, epoch_seed: tuple):
        self.mixup, self.mix, self.epoch_seed = mixup, mix, epoch_seed

    def __call__(self, images: list, labels: list, first_position: int):
        rng = sample_rng(*self.epoch_seed, int(first_position), what="batch")
        return self.mixup(np.stack(images), np.array(labels), mix=self.mix, rng=rng)


def _mix_batch(cfg, epoch: int) -> _MixBatch:
    """Mixup/CutMix with label smoothing; label smoothing only from epoch mixup_off_epoch on (0 = never)."""
    mixup = Mixup(cfg.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.switch_prob, cfg.mixup_mode,
                  cfg.label_smoothing)
    if mixup.active and cfg.mixup_mode == "pair" and cfg.batch_size % 2:
        raise ValueError(f"mixup_mode pair needs an even batch_size, got {cfg.batch_size}")
    return _MixBatch(mixup, mix=not (cfg.mixup_off_epoch > 0 and epoch >= cfg.mixup_off_epoch),
                     epoch_seed=(cfg.seed, epoch))


class TrainTransform:
    """Per-image train ops (timm's transforms_imagenet_train): `(RGB PIL image, rng) -> normalised CHW
    float32 [3, S, S]`, every random draw from `rng` (one per sample: see `sample_rng`)."""

    def __init__(self, cfg):
        # crop, flip and RandAugment run on PIL as in timm, and the resize is PIL's antialiased one,
        # like torchvision's
        self.crop = RandomResizedCrop(cfg.image_size, scale=(cfg.min_crop, 1.0), ratio=(3 / 4, 4 / 3),
                                      interpolation=INTERPOLATIONS[cfg.aa_interpolation])
        self.hflip = cfg.hflip
        self.rand_augment = create_auto_augment(cfg.auto_augment, cfg.aa_interpolation)
        self.erasing = RandomErasing(cfg.re_prob, cfg.re_mode, max_count=cfg.re_count) if cfg.re_prob > 0 else None

    def __call__(self, img: Image.Image, rng: random.Random) -> np.ndarray:
        img = self.crop(img, rng)
        if self.hflip > 0 and rng.random() < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            img = self.rand_augment(img, rng)
        array = normalize(img)  # = ToTensor + Normalize
        return array if self.erasing is None else self.erasing(array, rng)


class _TrainBatches:
    """Random-access source: b -> (images float32 [B, 3, S, S], soft targets float32 [B, K]) of the b-th
    batch of `samples`, every sample loaded and transformed with its own draws and the batch mixed in
    this one call (docs/development.md, the data pipeline). An unreadable file's slot takes the next readable image
    of the batch (cyclically) and its label, transformed with the slot's own draws."""

    def __init__(self, samples: _Samples, paths: list, transform: TrainTransform, mix: _MixBatch,
                 batch_size: int, drop_remainder: bool, skipped: SkippedImages, decoded: DecodedImages = None,
                 threads: int = 1):
        self.samples, self.paths, self.transform, self.mix = samples, paths, transform, mix
        self.batch_size, self.drop_remainder, self.skipped = batch_size, drop_remainder, skipped
        self.load = load_rgb if decoded is None else decoded.load
        self.threads, self._pool = threads, None

    def __getstate__(self):  # copies (MindSpore's, to iterate) start their own thread pool
        return {**self.__dict__, "_pool": None}

    def __len__(self):
        full, rest = divmod(len(self.samples), self.batch_size)
        return full + bool(rest and not self.drop_remainder)

    def __getitem__(self, b):
        start = int(b) * self.batch_size
        rows = [self.samples[k] for k in range(start, min(start + self.batch_size, len(self.samples)))]
        slots = self._slots(rows)
        pictures, reasons, images = zip(*slots)
        readable = [i for i, picture in enumerate(pictures) if picture is not None]
        for (index, _, _), reason in zip(rows, reasons):
            if reason:  # here, not in the parts: `skipped.paths` in the order of the epoch
                self.skipped.record(self.paths[int(index)], reason, action="replacing")
        if not readable:
            self.skipped.error = DatasetError(f"{self.paths[int(rows[0][0])]}: {reasons[0]}; none of the "
                                              f"{len(rows)} images of its training batch is readable")
            raise self.skipped.error
        images, labels = list(images), [label for _, label, _ in rows]
        for i in set(range(len(rows))) - set(readable):
            j = min(readable, key=lambda k: (k - i) % len(rows))
            images[i] = self.transform(pictures[j], sample_rng(*self.mix.epoch_seed, int(rows[i][2])))
            labels[i] = rows[j][1]
        return self.mix(images, labels, rows[0][2])

    def _slots(self, rows: list) -> list:
        """(decoded image or None, why unreadable, transformed image or None) per row, in order; with
        `threads` > 1 contiguous parts of the batch in parallel (docs/development.md, the data pipeline)."""
        if self.threads == 1:
            return self._part(rows)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="train-batches")
        size = -(-len(rows) // self.threads)
        return [slot for part in self._pool.map(self._part, [rows[i:i + size] for i in range(0, len(rows), size)])
                for slot in part]

    def _part(self, rows: list) -> list:
        slots = []
        for index, _, position in rows:
            picture, reason = self._read(int(index))
            image = None if picture is None else self.transform(picture, sample_rng(*self.mix.epoch_seed,
                                                                                     int(position)))
            slots.append((picture, reason, image))
        return slots

    def _read(self, index: int) -> tuple:
        """(decoded image, ''), or (None, why) for an unreadable file."""
        try:
            return self.load(self.paths[index]), ""
        except ImageReadError as e:
            return None, str(e)


def _split_samples(cfg, is_train: bool):
    """-> (split folder, class names, image paths, int32 class indices) after the num_samples subset;
    the split's layout (class folders, or a flat folder and a labels CSV) by `dataset` (labels.py)."""
    train_root = os.path.join(cfg.data_url, cfg.train_dir)
    root = train_root if is_train else os.path.join(cfg.data_url, cfg.val_dir)
    labels_key = "train_labels" if is_train else "val_labels"
    classes, samples = split_samples(root, labels_key, getattr(cfg, labels_key), cfg.dataset, train_root,
                                     cfg.train_labels, cfg.num_classes)
    key = "train_num_samples" if is_train else "val_num_samples"
    samples = _subset(samples, getattr(cfg, key), key, root)
    return root, classes, [path for path, _ in samples], np.array([label for _, label in samples], np.int32)


def _readable_images(samples: _Samples, paths, load: _LoadImage, workers: int, skipped: SkippedImages):
    """Columns (image, label) of `samples` loaded by `load`, unreadable files dropped."""
    data = ds.GeneratorDataset(samples, ["index", "label", "position"], shuffle=False, num_parallel_workers=1)
    data = data.map(load, input_columns=["index"], output_columns=["image", "error", "index"],
                    num_parallel_workers=workers, python_multiprocessing=_PYTHON_MULTIPROCESSING)
    data = data.filter(_KeepReadable(paths, skipped), input_columns=["error", "index"], num_parallel_workers=1)
    return data.project(["image", "label"])


def create_dataset(cfg, split: str, rank_id: int = 0, rank_size: int = 1, shuffle=None, drop_remainder=None,
                   epoch: int = 0, skip_batches: int = 0, skipped: SkippedImages = None,
                   decoded: DecodedImages = None):
    """Batched pipeline of `split` ('train' or 'val') for `epoch` (columns: see the module docstring).

    One training pipeline serves one epoch; iterating it again replays that epoch. skip_batches: start
    after the first k batches (resuming mid-epoch). skipped: a SkippedImages that counts the unreadable
    images met (read `.count` / `.paths`; iterate through `skipped.one_line_errors(iterator)` to get a
    batch's DatasetError as such). The pipeline's `class_names`: the split's names (index = class).
    shuffle / drop_remainder: None = True for train, False for val. decoded: where to keep decoded
    images across the pipelines of a run (pass the same one each epoch); None = decode every time.
    Only the decoded image is kept, never an augmented one, so the batches are the same either way.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not 0 <= rank_id < rank_size:
        raise ValueError(f"rank_id must be in [0, {rank_size}), got {rank_id}")
    is_train = split == "train"
    shuffle = is_train if shuffle is None else shuffle
    drop_remainder = is_train if drop_remainder is None else drop_remainder
    root, classes, paths, labels = _split_samples(cfg, is_train)

    repeats = cfg.repeated_aug if is_train else 0
    if repeats and len(paths) < 256:
        raise DatasetError(f"{root}: repeated_aug keeps floor(images / 256) * 256 images per epoch (DeiT's "
                           f"RASampler) but there are only {len(paths)}: set repeated_aug 0")
    order = _shard_order(len(paths), shuffle, cfg.seed, epoch, rank_id, rank_size, repeats)
    batches = len(order) // cfg.batch_size if drop_remainder else -(-len(order) // cfg.batch_size)
    if batches == 0:
        raise DatasetError(f"{root}: {len(order)} images per shard, fewer than batch_size {cfg.batch_size}")
    if not 0 <= skip_batches < batches:
        raise ValueError(f"skip_batches must be in [0, {batches}), got {skip_batches}")
    first = skip_batches * cfg.batch_size
    samples = _Samples(order[first:], labels, first, rank_id, rank_size)
    skipped = skipped if skipped is not None else SkippedImages()
    workers = _workers(cfg.num_parallel_workers)
    if is_train:
        source = _TrainBatches(samples, paths, TrainTransform(cfg), _mix_batch(cfg, epoch), cfg.batch_size,
                               drop_remainder, skipped, decoded, threads=workers)
        data = ds.GeneratorDataset(source, ["image", "label"], shuffle=False, num_parallel_workers=1)
    else:
        load = _LoadImage(paths, partial(eval_transform, image_size=cfg.image_size, crop_pct=cfg.crop_pct))
        data = _readable_images(samples, paths, load, workers, skipped).batch(cfg.batch_size, drop_remainder)
    # train: exact (unreadable images are replaced); val: nominal, since counting what the filter keeps
    # would run the whole pipeline once
    data.dataset_size = batches - skip_batches
    data.class_names = classes  # index = class; [] when a labels CSV gives indices only
    return data
