"""The fused training batch source: batch b of an epoch = its samples loaded, transformed with each
sample's own draws, stacked and mixed in one call, a pure function of (seed, epoch, position); and
what it shares across a run (unreadable images met, decoded images kept). A batch leaves it raw
(uint8 pixels and the draws of erasing and mixing, which the training graph applies:
src/data/batch_finish.py) or finished here by `finish_batch`. MindSpore-free, so that the worker
processes of `src/data/batch_workers.py` import it without MindSpore."""
import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from src.data.augment import Mixup, RandomErasing, RandomResizedCrop, create_auto_augment
from src.data.augment.mixup import apply_mix
from src.data.augment.auto_augment import INTERPOLATIONS
from src.data.folder import DatasetError
from src.data.preprocess import ImageReadError, load_rgb, normalize_pixels

log = logging.getLogger(__name__)

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

    def __getstate__(self):  # sent to a worker process: the budget only (each worker keeps its own store)
        return {"budget": self.budget}

    def __setstate__(self, state):
        self.__init__(state["budget"] // 2 ** 20)

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


ERASE_FIELDS = 5  # an erasing box in a raw batch's boxes: top, left, h, w, noise seed (h = 0: none)
CUTMIX_FIELDS = 4  # the CutMix box first: top, bottom, left, right (empty: none)


def _drawn(slots: np.ndarray) -> list:
    """A sample's erasing slots [E, 5] -> its boxes as RandomErasing.apply takes them (unused slots left out)."""
    return [tuple(int(v) for v in box) for box in slots if box[2] > 0]


def finish_batch(pixels: np.ndarray, weights: np.ndarray, boxes: np.ndarray, erasing: "RandomErasing") -> np.ndarray:
    """A raw batch's images (uint8 [B, 3, S, S], mixing weights [B, 2], boxes int64 [B, 4 + 5 E]) ->
    float32 [B, 3, S, S]: normalised, erased (`erasing` gives the fill; None = no erasing), mixed.
    The training graph's version: src/data/batch_finish.py."""
    images = normalize_pixels(pixels)
    if erasing is not None:
        for i, row in enumerate(boxes[:, CUTMIX_FIELDS:].reshape(len(boxes), -1, ERASE_FIELDS)):
            images[i] = erasing.apply(images[i], _drawn(row))
    return apply_mix(images, weights, boxes[:, :CUTMIX_FIELDS])


class _MixBatch:
    """`raw`: the (uint8 CHW image, erasing boxes) of a batch's samples, their labels and the position of
    its first sample -> the raw batch (images, soft targets, mixing weights, boxes: see `finish_batch`);
    the mixing draws are seeded by (seed, epoch, that position)."""

    def __init__(self, mixup: Mixup, mix: bool, epoch_seed: tuple):
        self.mixup, self.mix, self.epoch_seed = mixup, mix, epoch_seed

    def raw(self, samples: list, labels: list, first_position: int) -> tuple:
        pixels = np.stack([p for p, _ in samples])
        rng = sample_rng(*self.epoch_seed, int(first_position), what="batch")
        weights, cutmix, targets = self.mixup.draw(np.array(labels), pixels.shape, mix=self.mix, rng=rng)
        boxes = np.concatenate([cutmix, np.stack([e for _, e in samples]).reshape(len(samples), -1)], 1)
        return pixels, targets, weights, boxes


class TrainTransform:
    """Per-image train ops (timm's transforms_imagenet_train): `(RGB PIL image, rng) -> normalised CHW
    float32 [3, S, S]`, every random draw from `rng` (one per sample: see `sample_rng`). `raw` gives
    the same sample as what `finish_batch` completes: uint8 CHW pixels and its erasing boxes."""

    def __init__(self, cfg):
        # crop, flip and RandAugment run on PIL as in timm, and the resize is PIL's antialiased one,
        # like torchvision's
        self.crop = RandomResizedCrop(cfg.image_size, scale=(cfg.min_crop, 1.0), ratio=(3 / 4, 4 / 3),
                                      interpolation=INTERPOLATIONS[cfg.aa_interpolation])
        self.hflip = cfg.hflip
        self.rand_augment = create_auto_augment(cfg.auto_augment, cfg.aa_interpolation)
        self.erasing = RandomErasing(cfg.re_prob, cfg.re_mode, max_count=cfg.re_count) if cfg.re_prob > 0 else None

    def __call__(self, img: Image.Image, rng: random.Random) -> np.ndarray:
        pixels, boxes = self.raw(img, rng)
        array = normalize_pixels(pixels)  # = ToTensor + Normalize
        return array if self.erasing is None else self.erasing.apply(array, _drawn(boxes))

    def raw(self, img: Image.Image, rng: random.Random) -> tuple:
        """-> (uint8 [3, S, S], int64 [re_count, 5] erasing boxes, rows of zeros unused; [0, 5] without erasing)."""
        img = self.crop(img, rng)
        if self.hflip > 0 and rng.random() < self.hflip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.rand_augment is not None:
            img = self.rand_augment(img, rng)
        pixels = np.asarray(img).transpose(2, 0, 1).copy()
        slots = np.zeros((0 if self.erasing is None else self.erasing.max_count, ERASE_FIELDS), np.int64)
        if self.erasing is not None:
            drawn = self.erasing.draw(pixels.shape[1:], rng)
            slots[:len(drawn)] = np.array(drawn, np.int64).reshape(-1, ERASE_FIELDS)
        return pixels, slots


class _TrainBatches:
    """Random-access source: b -> (images float32 [B, 3, S, S], soft targets float32 [B, K]) of the b-th
    batch of `samples`, or with `raw` its raw form (uint8 images, targets, mixing weights, boxes: see
    `finish_batch`), every sample loaded and transformed with its own draws and the batch mixed in
    this one call (docs/development.md, the data pipeline). An unreadable file's slot takes the next
    readable image of the batch (cyclically) and its label, transformed with the slot's own draws.
    `compute` makes a batch (in this process, or in a worker process: src/data/batch_workers.py);
    `deliver` reports its unreadable files in the training process and hands the batch on."""

    def __init__(self, samples: _Samples, paths: list, transform: TrainTransform, mix: _MixBatch,
                 batch_size: int, drop_remainder: bool, skipped: SkippedImages, decoded: DecodedImages = None,
                 threads: int = 1, raw: bool = False):
        self.samples, self.paths, self.transform, self.mix = samples, paths, transform, mix
        self.raw = raw
        self.batch_size, self.drop_remainder, self.skipped = batch_size, drop_remainder, skipped
        self.decoded = decoded
        self.threads, self._pool = threads, None

    def __getstate__(self):  # copies (MindSpore's, to iterate) start their own thread pool
        return {**self.__dict__, "_pool": None}

    def __len__(self):
        full, rest = divmod(len(self.samples), self.batch_size)
        return full + bool(rest and not self.drop_remainder)

    def __getitem__(self, b):
        return self.deliver(self.compute(b))

    def compute(self, b) -> tuple:
        """-> (batch or None, [(path, why unreadable)] in the batch's order, '' or the error of a batch
        without a readable image)."""
        start = int(b) * self.batch_size
        rows = [self.samples[k] for k in range(start, min(start + self.batch_size, len(self.samples)))]
        pictures, reasons, images = zip(*self._slots(rows))
        readable = [i for i, picture in enumerate(pictures) if picture is not None]
        unreadable = [(self.paths[int(index)], reason) for (index, _, _), reason in zip(rows, reasons) if reason]
        if not readable:
            return None, unreadable, (f"{self.paths[int(rows[0][0])]}: {reasons[0]}; none of the {len(rows)} "
                                      "images of its training batch is readable")
        images, labels = list(images), [label for _, label, _ in rows]
        for i in set(range(len(rows))) - set(readable):
            j = min(readable, key=lambda k: (k - i) % len(rows))
            images[i] = self.transform.raw(pictures[j], sample_rng(*self.mix.epoch_seed, int(rows[i][2])))
            labels[i] = rows[j][1]
        batch = self.mix.raw(images, labels, rows[0][2])
        if not self.raw:
            pixels, targets, weights, boxes = batch
            batch = finish_batch(pixels, weights, boxes, self.transform.erasing), targets
        return batch, unreadable, ""

    def deliver(self, computed: tuple):
        """The batch of `compute`'s result, after recording its unreadable files (in batch order, so
        `skipped.paths` follows the epoch); raises its DatasetError if it has no readable image."""
        batch, unreadable, error = computed
        for path, reason in unreadable:
            self.skipped.record(path, reason, action="replacing")
        if error:
            self.skipped.error = DatasetError(error)
            raise self.skipped.error
        return batch

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
            rng = sample_rng(*self.mix.epoch_seed, int(position))
            image = None if picture is None else self.transform.raw(picture, rng)
            slots.append((picture, reason, image))
        return slots

    def _read(self, index: int) -> tuple:
        """(decoded image, ''), or (None, why) for an unreadable file."""
        try:
            return (load_rgb if self.decoded is None else self.decoded.load)(self.paths[index]), ""
        except ImageReadError as e:
            return None, str(e)
