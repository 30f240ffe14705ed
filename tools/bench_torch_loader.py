"""PyTorch side of `tools/bench.py --parts data --torch_python PYTHON`: the same training batches made
by torch's DataLoader, the loader timm's train.py uses, in the form train.py takes them (uint8 images
and the draws of erasing and mixing, as timm's loader with its prefetcher hands over uint8).

    PYTHON tools/bench_torch_loader.py SPEC.json

The samples and batches are this repository's own TrainTransform.raw and mixing draws, in the
DataLoader's workers, so only the loader differs (docs/development.md "The PyTorch side of the tools").
Needs torch, NumPy and Pillow, nothing of MindSpore.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, Sampler  # noqa: E402

from src.data.augment import Mixup  # noqa: E402
from src.data.folder import scan_image_folder  # noqa: E402
from src.data.preprocess import load_rgb  # noqa: E402
from src.data.train_batches import TrainTransform, _MixBatch, sample_rng  # noqa: E402
from tools.cpu_probe import timed_beside_busy_thread  # noqa: E402


class EpochOrder(Sampler):
    """(epoch, position, sample index) of the epoch's seeded permutation, as ours draws it."""

    def __init__(self, count: int, seed: int):
        self.count, self.seed, self.epoch = count, seed, 0

    def __len__(self):
        return self.count

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.count)
        return iter([(self.epoch, k, int(i)) for k, i in enumerate(order)])


class Samples:
    """Map-style dataset: (epoch, position, index) -> ((uint8 image [3, S, S], erasing boxes), class, epoch,
    position)."""

    def __init__(self, samples: list, cfg):
        self.samples, self.transform, self.seed = samples, TrainTransform(cfg), cfg.seed

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        epoch, position, index = key
        path, label = self.samples[index]
        return self.transform.raw(load_rgb(path), sample_rng(self.seed, epoch, position)), label, epoch, position


class MixCollate:
    """Stack a batch and draw its mixing with the draws of its first position, in the worker."""

    def __init__(self, cfg):
        self.seed = cfg.seed
        self.mixup = Mixup(cfg.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.switch_prob, cfg.mixup_mode,
                           cfg.label_smoothing)

    def __call__(self, items):
        samples, labels, epochs, positions = zip(*items)
        raw = _MixBatch(self.mixup, True, (self.seed, epochs[0])).raw(samples, labels, positions[0])
        return tuple(map(torch.from_numpy, raw))


def main() -> int:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    cfg = argparse.Namespace(**spec["cfg"])
    _, samples = scan_image_folder(os.path.join(cfg.data_url, cfg.train_dir))
    order = EpochOrder(len(samples), cfg.seed)
    loader = DataLoader(Samples(samples, cfg), batch_size=cfg.batch_size, sampler=order, drop_last=True,
                        num_workers=spec["workers"], collate_fn=MixCollate(cfg), persistent_workers=True,
                        prefetch_factor=2)  # torch's defaults on Linux: fork, 2 batches ahead per worker

    def epoch(e: int) -> int:
        order.epoch = e
        return sum(len(images) for images, *_ in loader)

    epoch(0)  # starts the workers, as the first epoch of a run does
    pids = [w.pid for w in loader._iterator._workers]  # persistent: the same processes every epoch
    seconds, cpu, images = timed_beside_busy_thread(lambda: sum(epoch(e) for e in range(1, spec["epochs"] + 1)),
                                                    spec["busy"], pids)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "images": images}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
