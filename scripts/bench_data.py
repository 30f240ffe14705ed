"""Data-pipeline throughput: eval transform, train without RandAugment, full train recipe.

    .venv/bin/python scripts/bench_data.py [--images 64] [--epochs 4] [--workers 2] [--image_size 224]

Writes `--images` JPEGs of 500x375 (smooth gradients plus noise, ~ImageNet file sizes)
into a temporary ImageFolder tree, then times each pipeline as train.py uses it: one
pipeline per epoch, iterated to the end. The first epoch (worker start-up) is
reported apart from the steady-state rate of the others.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from src.config import DEFAULT_CONFIG, parse_args  # noqa: E402
from src.data.imagenet import create_dataset  # noqa: E402


def write_images(root: str, count: int, classes: int = 4):
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(count):
        folder = os.path.join(root, "train", f"class{i % classes}")
        os.makedirs(folder, exist_ok=True)
        phase = rng.uniform(0, 6.3, 3)
        base = 127 + 100 * np.sin(np.stack([x / 37 + phase[0], y / 23 + phase[1], (x + y) / 51 + phase[2]], -1))
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i}.JPEG"), quality=90)
    os.symlink(os.path.join(root, "train"), os.path.join(root, "val"))  # the same images for eval


def rate(cfg, split: str, epochs: int):
    """(first-epoch img/s, steady-state img/s over the other epochs)."""
    times, counts = [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        data = create_dataset(cfg, split, epoch=epoch)
        count = sum(len(images) for images, _ in data.create_tuple_iterator(num_epochs=1, output_numpy=True))
        times.append(time.perf_counter() - start)
        counts.append(count)
    return counts[0] / times[0], sum(counts[1:]) / sum(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--batch_size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write_images(root, args.images)
        base = ["--config", DEFAULT_CONFIG, "--data_url", root, "--image_size", str(args.image_size),
                "--batch_size", str(args.batch_size), "--num_parallel_workers", str(args.workers),
                "--num_classes", "4", "--device_target", "CPU"]
        cases = [("eval transform", "val", []),
                 ("train without RandAugment", "train", ["--auto_augment", "none"]),
                 ("train full recipe", "train", [])]
        print(f"{args.images} JPEGs 500x375 -> {args.image_size} px, {args.workers} workers, "
              f"batch {args.batch_size}, {args.epochs} epochs")
        for name, split, extra in cases:
            cfg = parse_args(base + extra)
            first, steady = rate(cfg, split, args.epochs)
            print(f"{name:28s} {steady:7.1f} img/s (first epoch {first:.1f})", flush=True)


if __name__ == "__main__":
    main()
