"""ImageFolder datasets: the official DeiT/timm training recipe and the shared eval transform.

`create_dataset(cfg, split, rank_id, rank_size, ..., epoch=e, skip_batches=k)` returns a batched
pipeline (train: image float32 [B, 3, S, S] and soft-target labels [B, num_classes], or raw; val:
image uint8 [B, 3, S, S], eval-transformed but not normalised, and int32 labels [B]) whose order,
shards and every augmentation draw are a function of (seed, epoch, position), so a resumed run sees
the batches of the uninterrupted one; `SkippedImages` counts unreadable files and `DatasetError`
names a bad folder, CSV row or batch in one line. The training batches are computed by
src/data/train_batches.py, in threads or in the worker processes of src/data/batch_workers.py
(`data_workers_mode`). How it works (sampling, repeated augmentation, unreadable images, workers,
whole-batch items): docs/development.md "How it works: the data pipeline"."""
import logging
import multiprocessing
import os
import weakref
from functools import lru_cache, partial

import mindspore.dataset as ds
import numpy as np

from src.data.augment import create_mixup
from src.data.batch_threads import BatchThreads
from src.data.batch_workers import BatchWorkers, WorkerBatches, worker_batches
from src.data.eval_batches import EvalBatches
from src.data.folder import DatasetError
from src.data.labels import split_samples
from src.data.preprocess import eval_pixels
from src.data.train_batches import DecodedImages, SkippedImages, TrainTransform, _MixBatch, _Samples, _TrainBatches

log = logging.getLogger(__name__)

SPLITS = ("train", "val")
RAW_COLUMNS = ["image", "label", "mix", "boxes"]  # a raw training batch (create_dataset's raw)


def _subset(samples: list, num: int, key: str, root: str) -> list:
    """num evenly spaced samples of the class-sorted list (-1 = all): the same files on every run and
    rank, each class in proportion (the first num would be the first classes only)."""
    if num == -1:
        return samples
    if num > len(samples):
        raise DatasetError(f"{key} is {num} but {root} has only {len(samples)} images")
    return [samples[i] for i in np.arange(num) * len(samples) // num]


def data_workers(cfg) -> int:
    """The data workers (threads or processes) a pipeline of `cfg` uses: num_parallel_workers, capped."""
    available = multiprocessing.cpu_count()  # the bound MindSpore checks each op against
    if cfg.num_parallel_workers > available:
        _warn_capped(cfg.num_parallel_workers, available)
    return min(cfg.num_parallel_workers, available)


@lru_cache(maxsize=None)  # once per run: each epoch builds its pipelines again
def _warn_capped(requested: int, available: int) -> None:
    log.warning("num_parallel_workers %d > %d CPUs here: using %d per pipeline op", requested, available, available)


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


def _eval_transform(cfg):
    return partial(eval_pixels, image_size=cfg.image_size, crop_pct=cfg.crop_pct)


class _InWorkers:
    """Iterable source of GeneratorDataset: the batches of `source` (an EvalBatches) computed by `pool`
    (worker processes or threads) on each pass, batches left without a readable image dropped."""

    def __init__(self, source: EvalBatches, pool):
        self.source, self.pool = source, pool

    def __iter__(self):
        return worker_batches(self.source, self.pool)


def _mix_batch(cfg, epoch: int) -> _MixBatch:
    """Mixup/CutMix with label smoothing; label smoothing only from epoch mixup_off_epoch on (0 = never)."""
    mixup = create_mixup(cfg)
    if mixup.active and cfg.mixup_mode == "pair" and cfg.batch_size % 2:
        raise ValueError(f"mixup_mode pair needs an even batch_size, got {cfg.batch_size}")
    return _MixBatch(mixup, mix=not (cfg.mixup_off_epoch > 0 and epoch >= cfg.mixup_off_epoch),
                     epoch_seed=(cfg.seed, epoch))


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


def create_dataset(cfg, split: str, rank_id: int = 0, rank_size: int = 1, shuffle=None, drop_remainder=None,
                   epoch: int = 0, skip_batches: int = 0, skipped: SkippedImages = None,
                   decoded: DecodedImages = None, batch_workers: BatchWorkers = None, raw: bool = False):
    """Batched pipeline of `split` ('train' or 'val') for `epoch` (columns: see the module docstring).

    One training pipeline serves one epoch; iterating it again replays that epoch. skip_batches: start
    after the first k batches (resuming mid-epoch). skipped: a SkippedImages that counts the unreadable
    images met (read `.count` / `.paths`; iterate through `skipped.one_line_errors(iterator)` to get a
    batch's DatasetError as such). The pipeline's `class_names`: the split's names (index = class).
    shuffle / drop_remainder: None = True for train, False for val. decoded: where to keep decoded
    images across the pipelines of a run (pass the same one each epoch); None = decode every time.
    Only the decoded image is kept, never an augmented one, so the batches are the same either way.
    batch_workers: with data_workers_mode process, the worker processes of the run (pass the same
    ones each epoch); None = the pipeline starts its own, ended with it. raw (train): columns image
    (uint8), label, mix, boxes, which `BatchFinish` (src/data/batch_finish.py) turns into the image
    column of the default, in the training graph.
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
    workers = data_workers(cfg)
    in_processes = cfg.data_workers_mode == "process"
    own_workers = in_processes and batch_workers is None
    if in_processes:
        batch_workers = batch_workers or BatchWorkers(workers)
    if is_train:
        source = _TrainBatches(samples, paths, TrainTransform(cfg), _mix_batch(cfg, epoch), cfg.batch_size,
                               drop_remainder, skipped, decoded, threads=1 if in_processes else workers, raw=raw)
        if in_processes:
            source = WorkerBatches(source, batch_workers)
        data = ds.GeneratorDataset(source, RAW_COLUMNS if raw else ["image", "label"], shuffle=False,
                                   num_parallel_workers=1)
    else:
        kept = samples.order[:batches * cfg.batch_size - first]
        source = EvalBatches(paths, kept, labels, _eval_transform(cfg), cfg.batch_size, skipped)
        pool = batch_workers if in_processes else BatchThreads(workers)
        data = ds.GeneratorDataset(_InWorkers(source, pool), ["image", "label"], shuffle=False,
                                   num_parallel_workers=1)
        if not in_processes:
            weakref.finalize(data, pool.close)
    if own_workers:
        weakref.finalize(data, batch_workers.close)
    # train: exact (unreadable images are replaced); val: nominal, since counting what the filter keeps
    # would run the whole pipeline once
    data.dataset_size = batches - skip_batches
    data.class_names = classes  # index = class; [] when a labels CSV gives indices only
    return data
