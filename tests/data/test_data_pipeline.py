"""The ImageFolder pipelines on a tiny tree: columns, class order, subsets, shards, mixup switch-off,
training batches equal to their samples augmented one by one, and bad input (unreadable image replaced
in training and dropped in eval, missing/empty folders refused in one line)."""
import logging
import os
import subprocess
import sys
import time

import mindspore as ms
import mindspore.dataset as ds
from mindspore import ops
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from src.config import parse_args
from src.data.folder import scan_image_folder
from src.data.imagenet import (DatasetError, DecodedImages, SkippedImages, TrainTransform, _mix_batch, _Samples,
                                _shard_order, _split_samples, create_dataset)
from src.data.batch_finish import NormalizedInput, batch_finish
from src.data.batch_workers import BatchWorkers, DataWorkerError
from src.data.train_batches import finish_batch, sample_rng
from src.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, eval_transform, load_rgb, normalize_pixels

CLASSES = ("zebra", "apple", "mango")  # created in this order, indexed sorted: apple 0, mango 1, zebra 2
PER_CLASS = 6
BAD = os.path.join("train", "mango", "truncated.jpg")
MODES = ("thread", "process")  # data_workers_mode: batches computed by threads of this process or worker processes


def _color(split, class_index, i):
    """A distinct uniform colour per file, so an output image tells which file it came from."""
    return (40 * class_index + 7 * i + 3, 90 + 11 * i, 200 - 30 * class_index + (split == "val"))


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            os.makedirs(root / split / name)
            for i in range(PER_CLASS):
                Image.new("RGB", (48, 40), _color(split, c, i)).save(root / split / name / f"{i}.png")
    noise = np.random.RandomState(0).randint(0, 255, (40, 48, 3), np.uint8)
    Image.fromarray(noise).save(root / BAD, quality=90)
    data = (root / BAD).read_bytes()
    (root / BAD).write_bytes(data[: len(data) // 2])
    (root / "train" / "apple" / "notes.txt").write_text("not an image: ignored")
    return str(root)


def _cfg(data_root, *extra):
    return parse_args(["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"),
                       "--data_url", data_root, "--image_size", "32", "--batch_size", "4",
                       "--num_parallel_workers", "2", "--device_target", "CPU", "--repeated_aug", "0", *extra])


def _epochs(dataset, num_epochs=1):
    it = dataset.create_tuple_iterator(num_epochs=num_epochs, output_numpy=True)
    return [[(image, label) for image, label in it] for _ in range(num_epochs)]


def _file_ids(images):
    """Uniform images (normalised, or uint8 as the eval pipeline gives them) -> the (R, G, B) colour that
    names each file."""
    if images.dtype == np.uint8:
        return [tuple(int(v) for v in rgb) for rgb in images[:, :, 0, 0]]
    pixels = images[:, :, 0, 0] * IMAGENET_STD + IMAGENET_MEAN
    return [tuple(int(round(v)) for v in rgb * 255) for rgb in pixels]


# ----- training pipeline -----

def test_train_batches_are_float_images_and_soft_targets(data_root, caplog):
    skipped = SkippedImages()
    with caplog.at_level(logging.WARNING):
        dataset = create_dataset(_cfg(data_root), "train", skipped=skipped)
        assert dataset.get_dataset_size() == 19 // 4  # exact: the truncated image's slot is refilled
        (batches,) = _epochs(dataset)
    assert len(batches) == 19 // 4
    for image, target in batches:
        assert image.shape == (4, 3, 32, 32) and image.dtype == np.float32
        assert target.shape == (4, 1000) and target.dtype == np.float32
        assert np.allclose(target.sum(1), 1, atol=1e-5)
        assert target.min() >= 0.1 / 1000 - 1e-7  # label smoothing: no class below smoothing / K
        assert target[:, 3:].max() <= 0.1 / 1000 + 1e-7  # only the 3 real classes carry mass
    bad = os.path.join(data_root, BAD)
    assert skipped.count == 1 and skipped.paths == [bad]
    warnings = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1 and bad in warnings[0] and "\n" not in warnings[0]


def test_bad_image_is_counted_every_epoch_but_warned_once(data_root, caplog):
    skipped = SkippedImages()
    with caplog.at_level(logging.WARNING):
        epochs = _epochs(create_dataset(_cfg(data_root), "train", skipped=skipped), num_epochs=3)
    assert [len(e) for e in epochs] == [4, 4, 4]
    assert skipped.count == 3
    assert sum("unreadable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("mode", MODES)
def test_an_unreadable_training_image_is_replaced_by_the_next_readable_one_of_its_batch(data_root, caplog, mode):
    # unshuffled, the truncated file is sample 12 (after apple 0-5 and mango 0-5), then come zebra 0-5;
    # in worker processes too, the warning is logged (once) by this process
    plain = ("--auto_augment", "none", "--re_prob", "0", "--mixup", "0", "--cutmix", "0", "--label_smoothing", "0",
             "--data_workers_mode", mode)
    zebra = [_color("train", CLASSES.index("zebra"), i) for i in range(3)]
    skipped = SkippedImages()
    with caplog.at_level(logging.WARNING):
        (batches,) = _epochs(create_dataset(_cfg(data_root, *plain), "train", shuffle=False, skipped=skipped))
        (wrapped,) = _epochs(create_dataset(_cfg(data_root, *plain, "--batch_size", "13"), "train", shuffle=False,
                                            skipped=skipped))
    image, target = batches[3]  # samples 12-15: the truncated file, zebra 0, 1, 2
    assert _file_ids(image) == [zebra[0], *zebra] and target[:, :3].argmax(1).tolist() == [2] * 4
    image, target = wrapped[0]  # samples 0-12: the truncated file last, so the batch's first (apple 0) fills it
    assert len(image) == 13 and _file_ids(image)[12] == _file_ids(image)[0] == _color("train", 1, 0)  # apple 0
    assert target[12, :3].tolist() == [1, 0, 0]
    assert skipped.count == 2 and len([r for r in caplog.records if "unreadable" in r.getMessage()]) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_training_batch_without_a_readable_image_stops_with_one_line(tmp_path, mode):
    for name in ("a", "b"):
        os.makedirs(tmp_path / "train" / name)
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / f"{i}.png")
        (tmp_path / "train" / "b" / f"{i}.png").write_bytes(b"not a png")
    cfg = _cfg(str(tmp_path), "--batch_size", "2", "--data_workers_mode", mode)
    skipped = SkippedImages()
    dataset = create_dataset(cfg, "train", shuffle=False, skipped=skipped)  # batch 1: b/0, b/1
    with pytest.raises(RuntimeError, match="none of the 2 images of its training batch is readable"):
        _epochs(dataset)  # MindSpore's own error: a traceback
    with pytest.raises(DatasetError) as err:
        list(skipped.one_line_errors(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)))
    first = os.path.join(tmp_path, "train", "b", "0.png")
    assert str(err.value) == f"{first}: not an image file PIL can identify; none of the 2 images of its training " \
        "batch is readable"
    assert skipped.paths == [first, os.path.join(tmp_path, "train", "b", "1.png")]


def test_train_normalisation_matches_the_shared_constants(data_root):
    # uniform images: crop, flip and resize keep the colour, so each output is normalize(colour)
    cfg = _cfg(data_root, "--auto_augment", "none", "--re_prob", "0", "--mixup", "0", "--cutmix", "0",
               "--label_smoothing", "0")
    (batches,) = _epochs(create_dataset(cfg, "train", shuffle=False))
    image, target = batches[0]
    colours = [_color("train", CLASSES.index("apple"), i) for i in range(4)]  # the first 4 files, in order
    expected = (np.array(colours, np.float32)[:, :, None, None] / 255 - IMAGENET_MEAN[:, None, None]) \
        / IMAGENET_STD[:, None, None]
    assert np.allclose(image, np.broadcast_to(expected, image.shape), atol=1e-5)
    assert np.array_equal(target[:, :3], np.tile([1.0, 0, 0], (4, 1)))  # hard one-hot without smoothing


def test_mixup_stops_at_mixup_off_epoch_but_smoothing_stays(data_root):
    cfg = _cfg(data_root, "--mixup_off_epoch", "2", "--cutmix", "0")  # mixup alone: blends whole images
    on, off = 1 - 0.1 + 0.1 / 1000, 0.1 / 1000
    for epoch in (0, 1):
        (mixed,) = _epochs(create_dataset(cfg, "train", epoch=epoch))
        # blended labels (a row stays pure only when its partner B-1-i has the same class)
        assert any((target.max(1) < on - 1e-4).any() for _, target in mixed)
    for epoch in (2, 3):
        (unmixed,) = _epochs(create_dataset(cfg, "train", epoch=epoch))
        for _, target in unmixed:
            assert np.allclose(np.sort(target, 1)[:, -1], on) and np.allclose(np.sort(target, 1)[:, :-1], off)


def _order(data_root, split, epoch, skip_batches=0, rank_id=0, rank_size=1):
    """Files of one shuffled epoch in order, in full batches (no augmentation that changes colours)."""
    cfg = _cfg(data_root, "--auto_augment", "none", "--re_prob", "0", "--mixup", "0", "--cutmix", "0")
    (batches,) = _epochs(create_dataset(cfg, split, rank_id=rank_id, rank_size=rank_size, shuffle=True,
                                        drop_remainder=True, epoch=epoch, skip_batches=skip_batches))
    return _file_ids(np.concatenate([image for image, _ in batches]))


def test_epoch_order_is_seeded_per_epoch_and_skip_batches_resumes_it(data_root):
    epoch3 = _order(data_root, "val", 3)
    assert len(epoch3) == 16 and len(set(epoch3)) == 16  # 18 images, 4 full batches
    assert _order(data_root, "val", 3) == epoch3  # a resumed run sees the same order
    assert _order(data_root, "val", 4) != epoch3
    assert _order(data_root, "val", 3, skip_batches=2) == epoch3[8:]
    with pytest.raises(ValueError, match=r"skip_batches must be in \[0, 4\), got 4"):
        create_dataset(_cfg(data_root), "train", epoch=3, skip_batches=4)


@pytest.mark.parametrize("mode", MODES)
def test_augmented_batches_are_a_function_of_seed_epoch_and_position(data_root, mode):
    """The full recipe with 2 worker threads or processes: rebuilt pipelines give bit-identical batches,
    with 1 worker too, a pipeline resumed after k batches gives the same later batches, another epoch or
    seed other ones."""
    def batches(*extra, epoch=1, skip=0):
        cfg = _cfg(data_root, "--train_num_samples", "16", "--min_crop", "0.2", "--data_workers_mode", mode, *extra)
        return _epochs(create_dataset(cfg, "train", epoch=epoch, skip_batches=skip))[0]

    first = batches()
    assert len(first) == 4 and all(len(b) == 2 for b in first)
    for again in (batches(), batches("--num_parallel_workers", "1")):
        assert all(np.array_equal(x, y) for b, c in zip(first, again) for x, y in zip(b, c))
    resumed = batches(skip=2)
    assert all(np.array_equal(x, y) for b, c in zip(first[2:], resumed) for x, y in zip(b, c))
    for other in (batches(epoch=2), batches("--seed", "1")):
        assert not np.array_equal(first[0][0], other[0][0])


@pytest.fixture(scope="module")
def noise_root(tmp_path_factory):
    """24 noise images, none unreadable: every crop, flip, RandAugment op and erasing shows in the pixels."""
    root = tmp_path_factory.mktemp("noise")
    rng = np.random.RandomState(1)
    for name in CLASSES:
        os.makedirs(root / "train" / name)
        for i in range(8):
            Image.fromarray(rng.randint(0, 255, (40, 48, 3), np.uint8)).save(root / "train" / name / f"{i}.png")
    return str(root)


def _one_by_one(cfg, epoch, skip_batches):
    """The training batches spelled out from the same pieces: each sample of the epoch's order loaded and
    transformed with its own draws, a batch stacked and mixed with the draws of its first position."""
    _, _, paths, labels = _split_samples(cfg, True)
    first = skip_batches * cfg.batch_size
    samples = _Samples(_shard_order(len(paths), True, cfg.seed, epoch, 0, 1)[first:], labels, first)
    transform, mix = TrainTransform(cfg), _mix_batch(cfg, epoch)
    batches = []
    for start in range(0, len(samples) // cfg.batch_size * cfg.batch_size, cfg.batch_size):
        rows = [samples[k] for k in range(start, start + cfg.batch_size)]
        images = [transform(load_rgb(paths[i]), sample_rng(cfg.seed, epoch, int(p))) for i, _, p in rows]
        rng = sample_rng(cfg.seed, epoch, int(rows[0][2]), what="batch")
        batches.append(mix.mixup(np.stack(images), np.array([c for _, c, _ in rows]), mix=mix.mix, rng=rng))
    return batches


@pytest.mark.parametrize("mode", MODES)
def test_train_batches_equal_the_samples_augmented_one_by_one(noise_root, mode):
    """The tiny recipe (RandAugment, mixup/cutmix, hflip) with erasing on every image and 2 worker threads
    or processes: bit-identical to the plain loop, in order, also resumed after 2 batches and from the
    decoded store; processes also when one pool serves several epochs and pipelines abandoned midway."""
    cfg = _cfg(noise_root, "--re_prob", "1", "--min_crop", "0.2", "--data_workers_mode", mode)
    pool = BatchWorkers(2, in_flight=3) if mode == "process" else None
    store = DecodedImages(1)
    try:
        for epoch, skip, decoded in ((1, 0, None), (2, 2, store), (1, 1, None)):
            dataset = create_dataset(cfg, "train", epoch=epoch, skip_batches=skip, decoded=decoded,
                                     batch_workers=pool)
            next(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True))  # an iteration left midway
            got = _epochs(dataset)[0]
            expected = _one_by_one(cfg, epoch, skip)
            assert len(got) == len(expected) == 6 - skip
            for (image, target), (image_1, target_1) in zip(got, expected):
                assert np.array_equal(image, image_1) and np.array_equal(target, target_1)
    finally:
        if pool is not None:
            pool.close()
    if mode == "thread":  # processes: each worker keeps its own store
        assert len(store.images) == 16  # the resumed epoch (4 batches of 4) ran through the store


@pytest.mark.parametrize("mode, extra", [("process", ()), ("thread", ("--mixup_mode", "pair", "--re_count", "2")),
                                         ("thread", ("--mixup", "0", "--cutmix", "0"))])
def test_raw_batches_finished_in_the_graph_equal_the_samples_augmented_one_by_one(noise_root, mode, extra):
    """What train.py runs: uint8 batches with the draws of erasing (per-pixel noise) and mixing, finished
    by BatchFinish in the graph, equal the one-by-one reference within float rounding; finished by
    NumPy (finish_batch), bit-identical to it. A recipe without Mixup/CutMix leaves the mixing out of
    the graph."""
    cfg = _cfg(noise_root, "--re_prob", "1", "--min_crop", "0.2", "--data_workers_mode", mode, *extra)
    finish = batch_finish(cfg)
    assert finish.mixing == ("--mixup" not in extra)
    raw = list(create_dataset(cfg, "train", epoch=1, skip_batches=1, raw=True).create_tuple_iterator(
        num_epochs=1, output_numpy=True))
    expected = _one_by_one(cfg, 1, 1)
    assert len(raw) == len(expected) == 5
    for (pixels, targets, weights, boxes), (image, target) in zip(raw, expected):
        assert pixels.dtype == np.uint8 and pixels.shape == image.shape and np.array_equal(targets, target)
        assert np.array_equal(finish_batch(pixels, weights, boxes, TrainTransform(cfg).erasing), image)
        got = finish(ms.Tensor(pixels), ms.Tensor(weights), ms.Tensor(boxes)).asnumpy()
        assert np.allclose(got, image, rtol=1e-5, atol=1e-5)


def test_a_dead_data_worker_stops_the_epoch_with_one_line(data_root):
    pool = BatchWorkers(2)
    try:
        pool.workers[0].process.kill()
        pool.workers[0].process.wait()
        skipped = SkippedImages()
        dataset = create_dataset(_cfg(data_root), "train", skipped=skipped, batch_workers=pool)
        with pytest.raises(DataWorkerError) as err:
            list(skipped.one_line_errors(dataset.create_tuple_iterator(num_epochs=1, output_numpy=True)))
    finally:
        pool.close()
    pid = pool.workers[0].process.pid
    assert str(err.value).startswith(f"data worker 0 (pid {pid}) was killed by signal 9; ")
    assert "\n" not in str(err.value)


def test_pair_mode_with_odd_batch_is_refused_up_front(data_root):
    with pytest.raises(ValueError, match="mixup_mode pair needs an even batch_size, got 3"):
        create_dataset(_cfg(data_root, "--mixup_mode", "pair", "--batch_size", "3"), "train")


# ----- evaluation pipeline -----

@pytest.mark.parametrize("mode", MODES)
def test_val_batches_use_the_shared_eval_transform_and_sorted_classes(data_root, mode):
    cfg = _cfg(data_root, "--data_workers_mode", mode)
    (batches,) = _epochs(create_dataset(cfg, "val"))
    assert [len(label) for _, label in batches] == [4, 4, 4, 4, 2]  # drop_remainder False for val
    images = np.concatenate([image for image, _ in batches])
    labels = np.concatenate([label for _, label in batches])
    assert images.dtype == np.uint8 and images.shape == (18, 3, 32, 32) and labels.dtype == np.int32
    assert labels.tolist() == [0] * 6 + [1] * 6 + [2] * 6  # apple, mango, zebra
    first = os.path.join(data_root, "val", "apple", "0.png")
    # uint8 out of the pipeline; normalised by the graph (NormalizedInput), the shared eval transform
    expected = eval_transform(load_rgb(first), 32, cfg.crop_pct)
    assert np.array_equal(normalize_pixels(images[0]), expected)
    assert np.allclose(NormalizedInput(ops.Identity())(ms.Tensor(images[:1])).asnumpy()[0], expected, atol=1e-6)


def test_val_pipeline_leaves_out_unreadable_images_alike_in_threads_and_processes(tmp_path, caplog):
    for c, name in enumerate(("a", "b")):
        os.makedirs(tmp_path / "val" / name)
        for i in range(3):
            Image.new("RGB", (8, 8), (10 + 40 * c + i, 50, 60)).save(tmp_path / "val" / name / f"{i}.png")
    (tmp_path / "val" / "a" / "1.png").write_bytes(b"not a png")
    got = {}
    for mode in MODES:
        skipped = SkippedImages()
        with caplog.at_level(logging.WARNING):
            (batches,) = _epochs(create_dataset(_cfg(str(tmp_path), "--batch_size", "2", "--data_workers_mode", mode),
                                                "val", skipped=skipped))
        got[mode] = (_file_ids(np.concatenate([b for b, _ in batches])),
                     np.concatenate([label for _, label in batches]).tolist(), skipped.paths)
    assert got["thread"] == got["process"]
    ids, labels, paths = got["process"]
    assert ids == [(10, 50, 60), (12, 50, 60), (50, 50, 60), (51, 50, 60), (52, 50, 60)] and labels == [0, 0, 1, 1, 1]
    assert paths == [os.path.join(tmp_path, "val", "a", "1.png")]


def test_class_index_and_file_order_equal_image_folder_dataset(data_root):
    root = os.path.join(data_root, "val")
    classes, samples = scan_image_folder(root)
    reference = ds.ImageFolderDataset(root, shuffle=False, decode=False)
    assert reference.get_class_indexing() == {name: i for i, name in enumerate(classes)} \
        == {"apple": 0, "mango": 1, "zebra": 2}
    rows = list(reference.create_tuple_iterator(output_numpy=True))
    assert [int(label) for _, label in rows] == [label for _, label in samples]
    assert all(data.tobytes() == open(path, "rb").read() for (data, _), (path, _) in zip(rows, samples))


def test_subset_is_deterministic_and_spread_over_classes(data_root):
    cfg = _cfg(data_root, "--val_num_samples", "5")
    runs = [_epochs(create_dataset(cfg, "val"))[0] for _ in range(2)]
    labels = [np.concatenate([label for _, label in run]).tolist() for run in runs]
    assert labels[0] == labels[1] == [0, 0, 1, 1, 2]  # samples 0, 3, 7, 10, 14 of 18
    with pytest.raises(DatasetError, match="train_num_samples is 50 but .* has only 19 images"):
        create_dataset(_cfg(data_root, "--train_num_samples", "50"), "train")


@pytest.mark.parametrize("shuffle", [False, True])
def test_two_shards_partition_the_data(data_root, shuffle):
    cfg = _cfg(data_root, "--batch_size", "3")
    shards = []
    for rank in range(2):  # each rank builds its own pipeline, as in a distributed run
        (batches,) = _epochs(create_dataset(cfg, "val", rank_id=rank, rank_size=2, shuffle=shuffle, epoch=5))
        shards.append(_file_ids(np.concatenate([image for image, _ in batches])))
    assert len(shards[0]) == len(shards[1]) == 9
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == {_color("val", c, i) for c in range(3) for i in range(PER_CLASS)}


def test_shards_of_an_odd_count_wrap_around_to_equal_sizes():
    # as torch's DistributedSampler: pad the epoch's order with its start, then deal it out
    assert _shard_order(7, False, 0, 0, 0, 2).tolist() == [0, 2, 4, 6]
    assert _shard_order(7, False, 0, 0, 1, 2).tolist() == [1, 3, 5, 0]
    order = np.random.default_rng([0, 2]).permutation(7)
    shards = [_shard_order(7, True, 0, 2, rank, 3).tolist() for rank in range(3)]
    assert shards == [order[[0, 3, 6]].tolist(), order[[1, 4, 0]].tolist(), order[[2, 5, 1]].tolist()]


# ----- bad input -----

def _one_line_error(cfg, split, match):
    with pytest.raises(DatasetError, match=match) as err:
        create_dataset(cfg, split)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_missing_data_folder(tmp_path):
    missing = os.path.join(tmp_path, "nowhere", "train")
    assert missing in _one_line_error(_cfg(str(tmp_path / "nowhere")), "train", "data folder not found")


def test_split_folder_without_class_folders(tmp_path):
    os.makedirs(tmp_path / "val")
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "loose.png")  # images must sit in class folders
    assert os.path.join(tmp_path, "val") in _one_line_error(_cfg(str(tmp_path)), "val", "no class folders")


def test_class_folder_without_images(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / "train" / name)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "x.png")
    (tmp_path / "train" / "b" / "readme.txt").write_text("no images here")
    message = _one_line_error(_cfg(str(tmp_path)), "train", "class folder has no images")
    assert message.endswith(os.path.join(tmp_path, "train", "b"))


def test_more_classes_than_num_classes(data_root):
    _one_line_error(_cfg(data_root, "--num_classes", "2"), "val", "3 class folders but num_classes is 2")


def test_fewer_images_than_a_batch(data_root):
    _one_line_error(_cfg(data_root, "--batch_size", "64"), "train", "fewer than batch_size 64")


def test_workers_beyond_the_cpu_count_are_capped_with_a_warning(data_root, caplog):
    with caplog.at_level(logging.WARNING):
        dataset = create_dataset(_cfg(data_root, "--num_parallel_workers", "512"), "val")
    assert any("num_parallel_workers 512" in r.getMessage() for r in caplog.records)
    assert sum(len(label) for _, label in _epochs(dataset)[0]) == 18


# ----- random erasing in the pipeline, the decoded-image store -----

def test_random_erasing_runs_per_image_at_batch_level(data_root):
    # uniform images and mixup off: every pixel that differs from normalize(colour) was erased
    cfg = _cfg(data_root, "--auto_augment", "none", "--re_prob", "1", "--re_mode", "const", "--mixup", "0",
               "--cutmix", "0")
    (batches,) = _epochs(create_dataset(cfg, "train", shuffle=False))
    image = batches[0][0]
    colours = np.array([_color("train", CLASSES.index("apple"), i) for i in range(4)], np.float32)
    expected = (colours[:, :, None, None] / 255 - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    erased = ~np.isclose(image, np.broadcast_to(expected, image.shape), atol=1e-5).all(1)  # [B, H, W]
    assert erased.any(axis=(1, 2)).all()  # each image has its box (re_prob 1) ...
    assert (image.transpose(0, 2, 3, 1)[erased] == 0).all()  # ... filled with 0 ('const')
    assert len({m.tobytes() for m in erased}) > 1  # drawn per image


def test_data_workers_end_with_a_training_process_killed_9():
    """Worker processes and their batch folder do not outlive a training process that is killed -9."""
    code = ("import sys, time\nfrom src.data.batch_workers import BatchWorkers\npool = BatchWorkers(2)\n"
            "print(*pool.pids(), pool.folder, flush=True)\ntime.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    *pids, folder = proc.stdout.readline().split()
    assert os.path.isdir(folder)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids) and not os.path.exists(folder)


def test_decoded_images_are_kept_across_epochs_within_the_budget(tmp_path):
    for c, name in enumerate(("a", "b")):
        os.makedirs(tmp_path / "train" / name)
        for i in range(4):
            Image.new("RGB", (8, 8), (10 + 40 * c + i, 50, 60)).save(tmp_path / "train" / name / f"{i}.png")
    (tmp_path / "train" / "b" / "bad.png").write_bytes(b"not a png")
    # batches of 3: the 9 files sorted, so the last batch is b/2, b/3 and the unreadable file
    # in this process's threads: worker processes keep their own stores, which this test cannot inspect
    cfg = _cfg(str(tmp_path), "--auto_augment", "none", "--re_prob", "0", "--mixup", "0", "--cutmix", "0",
               "--min_crop", "1", "--batch_size", "3", "--data_workers_mode", "thread")
    decoded, skipped = DecodedImages(1), SkippedImages()  # 1 MiB: all 8 images (192 bytes each)
    first = _file_ids(np.concatenate([b for b, _ in _epochs(create_dataset(cfg, "train", shuffle=False,
                                                                            decoded=decoded, skipped=skipped))[0]]))
    assert len(decoded.images) == 8 and decoded.used == 8 * 8 * 8 * 3  # the bad file is not kept
    for path in _pngs(tmp_path):  # repaint every file: a run that reads them again sees new colours
        if not path.endswith("bad.png"):
            Image.new("RGB", (8, 8), (200, 200, 200)).save(path)
    again = _file_ids(np.concatenate([b for b, _ in _epochs(create_dataset(cfg, "train", shuffle=False,
                                                                            decoded=decoded, skipped=skipped))[0]]))
    fresh = _file_ids(np.concatenate([b for b, _ in _epochs(create_dataset(cfg, "train", shuffle=False))[0]]))
    assert again == first and len(set(first)) == 8  # served from memory, each file its own colour
    assert first[8] == first[6]  # the unreadable file's slot holds its batch's first image, b/2
    assert set(fresh) == {(200, 200, 200)}
    assert skipped.count == 2  # the unreadable file is tried (and counted) every epoch
    small = DecodedImages(0)
    small.budget = 2 * 8 * 8 * 3  # room for two images: the rest is decoded each time
    _epochs(create_dataset(cfg, "train", shuffle=False, decoded=small))
    assert len(small.images) == 2 and small.used == 2 * 8 * 8 * 3


def _pngs(root):
    import glob
    return sorted(glob.glob(os.path.join(str(root), "train", "*", "*.png")))


def test_workers_beyond_the_cpu_count_are_capped_with_one_warning_per_run(caplog):
    from src.data.imagenet import _warn_capped, data_workers
    n = os.cpu_count()
    cfg = _cfg(".", "--num_parallel_workers", str(n + 1))
    _warn_capped.cache_clear()
    with caplog.at_level(logging.WARNING, logger="src.data.imagenet"):
        assert [data_workers(cfg) for _epoch in range(3)] == [n] * 3  # each epoch's pipelines ask again
    assert [r.getMessage() for r in caplog.records] == [f"num_parallel_workers {n + 1} > {n} CPUs here: using {n} "
                                                        "per pipeline op"]
