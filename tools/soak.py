"""Soak benchmark: train.py's resident memory at the end of every epoch of a long run, at two dataset sizes.

    .venv/bin/python tools/soak.py [--config src/configs/demo_cpu.yaml] [--epochs 12] [--images 1280 5120]
        [--val_images 256] [--output F] [any train.py key, e.g. --batch_size 64]

For each --images count a fresh process trains as train.py does on generated 28x28 images of 10
classes and reads its VmRSS after each epoch's checkpoint and validation; it reports each count's
growth and slope from the end of epoch 2 and, from two counts, the per-image term (docs/benchmark.md
"Memory over a long run"), then the results as one JSON line.  Linux only (reads /proc).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from anywhere

from src.trainer.allocator import limit_malloc_arenas  # noqa: E402

limit_malloc_arenas()  # as train.py does, before NumPy or MindSpore start threads

import numpy as np  # noqa: E402

from src.config import TRAIN, add_output_arg, parse_args  # noqa: E402  (needs the path above)

CLASSES = 10
START_EPOCH = 2  # growth is measured from the end of this epoch (1-based)


def _script_args(parser):
    parser.add_argument("--images", type=int, nargs="+", default=[1280, 5120],
                        help="training images per epoch, one run each (two give the per-image term)")
    parser.add_argument("--val_images", type=int, default=256, help="validation images (the same in every run)")
    add_output_arg(parser, "the results as JSON (they are printed in any case)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # data folder, set for the subprocesses


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def write_images(root: str, train: int, val: int, size: int = 28) -> None:
    """root/{train,val}/<class>/<i>.png: smooth random grey patterns plus noise, 10 classes."""
    from PIL import Image
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size]
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            folder = os.path.join(root, split, f"class{i % CLASSES}")
            os.makedirs(folder, exist_ok=True)
            phase = rng.uniform(0, 6.3, 2)
            pixels = 127 + 90 * np.sin(x / (3 + i % CLASSES) + phase[0]) * np.cos(y / 5 + phase[1])
            pixels = np.clip(pixels + rng.normal(0, 20, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).convert("RGB").save(os.path.join(folder, f"{i}.png"))


def _child(cfg) -> dict:
    """Train `cfg` as train.py does and sample VmRSS after each epoch's checkpoint and validation."""
    from src.trainer.trainer import Trainer

    class SampledTrainer(Trainer):
        rss = []

        def _validate(self, epoch, losses):
            super()._validate(epoch, losses)
            self.rss.append(round(_rss_mib(), 1))

    cfg.resume = ""  # train.py's --checkpoint: a soak run starts afresh
    start = time.perf_counter()
    trainer = SampledTrainer(cfg)
    trainer.fit()
    return {"images": cfg.train_num_samples, "rss_mib": SampledTrainer.rss,
            "seconds": round(time.perf_counter() - start, 1)}


def summarise(run: dict) -> dict:
    """Growth of one run from the end of epoch START_EPOCH to the end (MiB, %, MiB per epoch)."""
    rss = run["rss_mib"]
    tail = rss[START_EPOCH - 1:]
    slope = float(np.polyfit(np.arange(len(tail)), tail, 1)[0]) if len(tail) > 1 else 0.0
    return dict(run, growth_mib=round(tail[-1] - tail[0], 1), growth_pct=round(100 * (tail[-1] / tail[0] - 1), 2),
                mib_per_epoch=round(slope, 2))


def per_image_kib(runs: list) -> float:
    """KiB per training image per epoch: slope difference of the largest and smallest runs over their
    image-count difference."""
    small, large = min(runs, key=lambda r: r["images"]), max(runs, key=lambda r: r["images"])
    return round((large["mib_per_epoch"] - small["mib_per_epoch"]) * 1024 / (large["images"] - small["images"]), 3)


def main() -> int:
    argv = sys.argv[1:]
    default_config = os.path.join(REPO, "src", "configs", "demo_cpu.yaml")
    args = parse_args(argv, description=__doc__.split("\n")[0], script=TRAIN, add_script_args=_script_args,
                      default_config=default_config)
    if args.child:
        print(json.dumps(_child(args)), flush=True)
        return 0
    if args.epochs <= START_EPOCH or min(args.images) < args.batch_size:
        print(f"soak.py: needs --epochs > {START_EPOCH} and --images of at least --batch_size {args.batch_size}",
              file=sys.stderr)
        return 2
    print(f"{args.arch} at {args.image_size} px, batch {args.batch_size}, {args.epochs} epochs, "
          f"{args.num_parallel_workers} workers; training images per epoch: {args.images}", flush=True)
    runs = []
    with tempfile.TemporaryDirectory(prefix="soak-") as root:
        data = os.path.join(root, "data")
        write_images(data, max(args.images), args.val_images)
        for images in args.images:
            out = os.path.join(root, f"run{images}")
            child = [*argv, "--child", data, "--data_url", data, "--train_dir", "train", "--val_dir", "val",
                     "--train_num_samples", str(images), "--val_num_samples", str(args.val_images),
                     "--ckpt_root_dir", os.path.join(out, "ckpt"), "--best_ckpt_root_dir", os.path.join(out, "best"),
                     "--summary_root_dir", os.path.join(out, "summary"), "--pretrained", "", "--repeated_aug", "0"]
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), *child], capture_output=True,
                                  text=True, env=dict(os.environ, GLOG_v="3"))
            if proc.returncode:
                print(f"soak.py: the run of {images} images failed: "
                      f"{(proc.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
                return 1
            runs.append(summarise(json.loads(proc.stdout.strip().splitlines()[-1])))
            run = runs[-1]
            print(f"{images} images: RSS MiB per epoch {run['rss_mib']}; epoch {START_EPOCH} -> {args.epochs}: "
                  f"{run['growth_mib']:+.1f} MiB ({run['growth_pct']:+.2f} %), {run['mib_per_epoch']:+.2f} MiB/epoch; "
                  f"{run['seconds']} s", flush=True)
    summary = {"arch": args.arch, "image_size": args.image_size, "batch_size": args.batch_size,
               "epochs": args.epochs, "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX", ""), "runs": runs}
    if len({r["images"] for r in runs}) > 1:
        summary["kib_per_image_per_epoch"] = per_image_kib(runs)
        print(f"per-image term: {summary['kib_per_image_per_epoch']:+.3f} KiB per training image per epoch")
    print(json.dumps(summary))
    if args.output:
        from src.io import write_json_atomic
        write_json_atomic(args.output, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
