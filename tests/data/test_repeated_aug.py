"""Repeated augmentation (`repeated_aug`): DeiT's RASampler order, its per-rank epoch length, the copies
of an image spread over ranks with their own augmentation, determinism and exact resume."""
import collections
import math
import os

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from src.config import parse_args
from src.data.imagenet import DatasetError, _shard_order, create_dataset

FILES = 258  # one file per class folder: a sample's class names its file


def _deit_rasampler(order, num_replicas, rank, num_repeats):
    """DeiT samplers.py RASampler.__iter__ in plain Python, on a given permutation."""
    num_samples = int(math.ceil(len(order) * num_repeats / num_replicas))
    total_size = num_samples * num_replicas
    num_selected_samples = int(math.floor(len(order) // 256 * 256 / num_replicas))
    indices = [i for i in order for _ in range(num_repeats)]
    indices += indices[:total_size - len(indices)]
    return indices[rank:total_size:num_replicas][:num_selected_samples]


@pytest.mark.parametrize("num,ranks,repeats", [(1000, 1, 3), (1000, 8, 3), (1281, 3, 3), (300, 2, 4), (257, 7, 2)])
def test_order_is_deits_rasampler_on_the_seeded_permutation(num, ranks, repeats):
    permutation = np.random.default_rng([0, 5]).permutation(num).tolist()
    shards = [_shard_order(num, True, 0, 5, rank, ranks, repeats).tolist() for rank in range(ranks)]
    assert shards == [_deit_rasampler(permutation, ranks, rank, repeats) for rank in range(ranks)]
    assert {len(s) for s in shards} == {num // 256 * 256 // ranks}  # per-rank epoch length
    counts = collections.Counter(i for shard in shards for i in shard)
    chosen = sum(len(s) for s in shards) // repeats
    # the epoch's first `chosen` images, each `repeats` times (a partly cut last one at most)
    assert all(counts[i] == repeats for i in permutation[:chosen])
    assert set(counts) <= set(permutation[:chosen + 1])


def test_copies_go_to_different_ranks_or_consecutive_positions():
    one_rank = _shard_order(1000, True, 0, 0, 0, 1, 3)
    assert (one_rank[0::3] == one_rank[1::3]).all() and (one_rank[0::3] == one_rank[2::3]).all()
    three = [_shard_order(1000, True, 0, 0, rank, 3, 3) for rank in range(3)]
    assert (three[0] == three[1]).all() and (three[0] == three[2]).all()  # same image, same step, 3 ranks
    assert len(set(three[0].tolist())) == len(three[0])  # and no rank sees it twice
    four = [set(_shard_order(1000, True, 0, 0, rank, 4, 3).tolist()) for rank in range(4)]
    assert all(four[r] != four[s] for r in range(4) for s in range(r))


def test_order_is_deterministic_per_seed_and_epoch():
    order = _shard_order(1000, True, 0, 2, 1, 2, 3)
    assert (_shard_order(1000, True, 0, 2, 1, 2, 3) == order).all()
    assert not (_shard_order(1000, True, 0, 3, 1, 2, 3) == order).all()
    assert not (_shard_order(1000, True, 1, 2, 1, 2, 3) == order).all()


@pytest.fixture(scope="module")
def noise_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("ra")
    rng = np.random.default_rng(0)
    for i in range(FILES):
        os.makedirs(root / "train" / f"{i:03d}")
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), np.uint8)).save(root / "train" / f"{i:03d}" / "0.png")
    return str(root)


def _cfg(root, *extra):
    # crop + flip only: the copies of an image differ by their augmentation; no mixing, hard labels
    return parse_args(["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"),
                       "--data_url", root, "--image_size", "32", "--num_classes", str(FILES), "--batch_size", "8",
                       "--num_parallel_workers", "2", "--device_target", "CPU", "--auto_augment", "none",
                       "--re_prob", "0", "--mixup", "0", "--cutmix", "0", "--label_smoothing", "0",
                       "--min_crop", "0.3", *extra])


def _epoch(cfg, **kwargs):
    """(images, file index of each) of one epoch of the train pipeline."""
    batches = list(create_dataset(cfg, "train", epoch=1, **kwargs).create_tuple_iterator(output_numpy=True))
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1].argmax(1) for b in batches])


def test_pipeline_serves_each_copy_on_its_own_rank_with_its_own_augmentation(noise_folder):
    cfg = _cfg(noise_folder)
    assert cfg.repeated_aug == 3  # the ImageNet config's default, as the official recipe
    ranks = [_epoch(cfg, rank_id=rank, rank_size=3) for rank in range(3)]
    for rank, (images, files) in enumerate(ranks):
        assert files.tolist() == _shard_order(FILES, True, cfg.seed, 1, rank, 3, 3)[:len(files)].tolist()
        assert len(files) == 256 // 3 // 8 * 8  # DeiT's 85 per rank, in full batches of 8
    assert (ranks[0][1] == ranks[1][1]).all() and (ranks[0][1] == ranks[2][1]).all()
    differs = [not np.array_equal(ranks[0][0][k], ranks[r][0][k]) for r in (1, 2) for k in range(len(ranks[0][0]))]
    assert np.mean(differs) > 0.9  # independent crop/flip draws (an identical draw is rare)


def test_epoch_length_is_kept_and_resume_skips_exactly(noise_folder):
    cfg, plain = _cfg(noise_folder), _cfg(noise_folder, "--repeated_aug", "0")
    full = create_dataset(cfg, "train", epoch=1)
    assert full.get_dataset_size() == create_dataset(plain, "train", epoch=1).get_dataset_size() == 32
    _, files = _epoch(cfg)
    counts = collections.Counter(files.tolist())
    assert len(counts) == 86 and sorted(set(counts.values())) == [1, 3]  # 85 images x 3 + 1 cut short
    _, resumed = _epoch(cfg, skip_batches=5)
    assert resumed.tolist() == files[40:].tolist()


def test_fewer_than_256_images_is_refused_in_one_line(noise_folder):
    with pytest.raises(DatasetError, match="repeated_aug .* only 200: set repeated_aug 0") as err:
        create_dataset(_cfg(noise_folder, "--train_num_samples", "200"), "train")
    assert "\n" not in str(err.value)
    assert create_dataset(_cfg(noise_folder, "--train_num_samples", "200", "--repeated_aug", "0"), "train")


def test_repeat_count_of_one_is_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--repeated_aug", "1"])
    assert "repeated_aug: 1 must be 0 (off) or a repeat count >= 2" in capsys.readouterr().err
