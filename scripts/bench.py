"""One benchmark run on this machine: data pipeline, MindSpore forward and train step, MINDIR,
onnxruntime, and a NumPy matmul probe of the machine's reachable GFLOP/s, with ratios.

    .venv/bin/python scripts/bench.py --device_target CPU [--config CFG] [--arch ARCH] [--image_size 224]
        [--batches 1 16] [--train_batch 16] [--repeats 3] [--parts data forward train deploy probe]
        [--json_out bench.json]

Every figure comes from the same run: each timed call is preceded by an untimed one (MindSpore
compiles there) and img/s is batch / median time.  Weights are seeded random ones: speed does
not depend on their values.  Prints a table, then the results as one JSON line.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np
import mindspore as ms
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from src.config import parse_args  # noqa: E402  (needs the path above)
from src.conformer import canonical_arch, create_model_from_config  # noqa: E402
from src.data.imagenet import create_dataset  # noqa: E402
from src.tools.criterion import create_loss  # noqa: E402
from src.tools.device import init_context  # noqa: E402
from src.tools.export import InferenceNet, export_model, load_mindir, output_names  # noqa: E402
from src.tools.inference import onnx_forward  # noqa: E402
from src.tools.optimizer import create_optimizer  # noqa: E402
from src.trainer.train_one_step import NetWithLoss, TrainOneStep  # noqa: E402

PARTS = ("data", "forward", "train", "deploy", "probe")
# forward multiply-accumulates at 224 px (official figures); scaled by pixel count for other sizes
GMACS_224 = {"conformer_tiny_patch16": 5.23, "conformer_small_patch16": 10.60,
             "conformer_small_patch32": 7.05, "conformer_base_patch16": 23.33}


def _script_args(parser):
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="forward batch sizes")
    parser.add_argument("--train_batch", type=int, default=16, help="batch size of the timed train step")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--images", type=int, default=64, help="JPEGs (500x375) written for the data pipeline")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--json_out", default="", help="also write the results to this JSON file")


def _median_time(call, repeats: int) -> float:
    call()  # compile / warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _write_jpegs(root: str, count: int, classes: int = 4) -> None:
    """ImageNet-like files: 500x375 JPEGs of smooth patterns plus noise, in train/ and val/."""
    rng = np.random.RandomState(0)
    y, x = np.mgrid[0:375, 0:500].astype(np.float32)
    for split in ("train", "val"):
        for i in range(count):
            folder = os.path.join(root, split, f"class{i % classes}")
            os.makedirs(folder, exist_ok=True)
            phase = rng.uniform(0, 6.3, 3)
            base = 127 + 100 * np.sin(np.stack([x / 37 + phase[0], y / 23 + phase[1], (x + y) / 51 + phase[2]], -1))
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i}.JPEG"), quality=90)


def bench_data(cfg, argv) -> list:
    """img/s of the eval pipeline and of the full train recipe (one pipeline per epoch, as train.py)."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        _write_jpegs(root, cfg.images)
        data_cfg = parse_args([*argv, "--data_url", root, "--num_classes", "4", "--batch_size", "16"],
                              add_script_args=_script_args)
        for name, split in (("data: eval transform", "val"), ("data: train recipe", "train")):
            counts, start = 0, time.perf_counter()
            for epoch in range(2):
                data = create_dataset(data_cfg, split, epoch=epoch)
                counts += sum(len(b) for b, _ in data.create_tuple_iterator(num_epochs=1, output_numpy=True))
            seconds = time.perf_counter() - start
            rows.append({"what": name, "batch": 16, "img_per_s": counts / seconds,
                         "note": f"{min(data_cfg.num_parallel_workers, os.cpu_count())} workers, "
                                 f"{cfg.images} JPEGs 500x375"})
    return rows


def _images(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)


def bench_forward(cfg, net) -> list:
    summed = InferenceNet(net)
    summed.set_train(False)
    rows = []
    for batch in cfg.batches:
        x = ms.Tensor(_images(batch, cfg.image_size))
        seconds = _median_time(lambda: summed(x).asnumpy(), cfg.repeats)
        rows.append({"what": "MindSpore GRAPH forward", "batch": batch, "img_per_s": batch / seconds})
    return rows


def bench_train(cfg, net) -> list:
    cfg.epochs, cfg.warmup_length = 1, 0
    optimizer = create_optimizer(cfg, net, np.full(cfg.repeats + 2, cfg.base_lr, np.float32))
    step = TrainOneStep(NetWithLoss(net, create_loss(cfg)), optimizer, loss_scale=float(cfg.loss_scale),
                        dynamic_loss_scale=cfg.is_dynamic_loss_scale,
                        clip_grad_norm=cfg.clip_grad_norm if cfg.use_clip_grad_norm else 0.0)
    step.set_train(True)
    batch = cfg.train_batch
    x = ms.Tensor(_images(batch, cfg.image_size))
    targets = ms.Tensor(np.eye(cfg.num_classes, dtype=np.float32)[np.arange(batch) % cfg.num_classes])
    seconds = _median_time(lambda: step(x, targets)[0].asnumpy(), cfg.repeats)
    net.set_train(False)
    return [{"what": f"MindSpore train step ({cfg.optimizer})", "batch": batch, "img_per_s": batch / seconds}]


def bench_deploy(cfg, net) -> list:
    summed = InferenceNet(net)
    summed.set_train(False)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        example = ms.Tensor(np.zeros((1, 3, cfg.image_size, cfg.image_size), np.float32))
        mindir = load_mindir(export_model(summed, example, os.path.join(workdir, "model"), "MINDIR"))
        onnx_path = export_model(summed, example, os.path.join(workdir, "model"), "ONNX", output_names(False))
        ort_forward = onnx_forward(onnx_path, cfg.device_target, cfg.image_size)
        for batch in cfg.batches:
            images = _images(batch, cfg.image_size)
            x = ms.Tensor(images)
            reference = summed(x).asnumpy()
            for name, call in (("MINDIR GraphCell", lambda: mindir(x).asnumpy()),
                               ("onnxruntime", lambda: ort_forward(images))):
                seconds = _median_time(call, cfg.repeats)
                diff = np.abs(call() - reference).max() / max(1.0, np.abs(reference).max())
                rows.append({"what": name, "batch": batch, "img_per_s": batch / seconds,
                             "note": f"max diff {diff:.1e} of the logit scale vs MindSpore"})
    return rows


def bench_probe(cfg) -> list:
    """Reachable float32 GFLOP/s of this machine: a NumPy (BLAS) matmul, all cores."""
    n = 1024
    a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in range(2))
    seconds = _median_time(lambda: a @ b, max(cfg.repeats, 5))
    return [{"what": "probe: NumPy matmul 1024^2", "batch": 0, "img_per_s": 0.0,
             "gflops": 2 * n ** 3 / seconds / 1e9}]


def add_ratios(cfg, rows: list) -> None:
    """Model GFLOP/s over the probe's, and each deploy runtime over MindSpore at the same batch."""
    probe = next((r["gflops"] for r in rows if "gflops" in r), None)
    gmacs = GMACS_224.get(cfg.arch_name, 0.0) * (cfg.image_size / 224) ** 2
    forward = {r["batch"]: r["img_per_s"] for r in rows if r["what"] == "MindSpore GRAPH forward"}
    for r in rows:
        if r["img_per_s"] and gmacs and "data" not in r["what"]:
            flops = 3 if "train" in r["what"] else 1  # backward ~ 2x forward
            r["gflops"] = r["img_per_s"] * 2 * gmacs * flops
            if probe:
                r["vs_probe"] = r["gflops"] / probe
        if r["what"] in ("MINDIR GraphCell", "onnxruntime") and r["batch"] in forward:
            r["vs_mindspore"] = r["img_per_s"] / forward[r["batch"]]


def print_table(cfg, rows: list) -> None:
    print(f"{cfg.arch_name} at {cfg.image_size} px on {cfg.device_target}, {os.cpu_count()} cores, "
          f"MindSpore {ms.__version__}")
    print("| what | batch | img/s | GFLOP/s | vs probe | vs MindSpore | note |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [r["what"], r["batch"] or "", f"{r['img_per_s']:.2f}" if r["img_per_s"] else "",
                 f"{r['gflops']:.1f}" if "gflops" in r else "", f"{r['vs_probe']:.2f}" if "vs_probe" in r else "",
                 f"{r['vs_mindspore']:.2f}x" if "vs_mindspore" in r else "", r.get("note", "")]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> int:
    argv = sys.argv[1:]
    cfg = parse_args(argv, description=__doc__.splitlines()[0], add_script_args=_script_args)
    init_context(cfg)
    cfg.arch_name = canonical_arch(cfg.arch)
    rows = []
    if "data" in cfg.parts:
        rows += bench_data(cfg, argv)
    if {"forward", "train", "deploy"} & set(cfg.parts):
        net = create_model_from_config(cfg)
        if "forward" in cfg.parts:
            rows += bench_forward(cfg, net)
        if "deploy" in cfg.parts:
            rows += bench_deploy(cfg, net)
        if "train" in cfg.parts:
            rows += bench_train(cfg, net)
    if "probe" in cfg.parts:
        rows += bench_probe(cfg)
    add_ratios(cfg, rows)
    print_table(cfg, rows)
    report = {"arch": cfg.arch_name, "image_size": cfg.image_size, "device_target": cfg.device_target,
              "mindspore": ms.__version__, "cpu_count": os.cpu_count(), "results": rows}
    print(json.dumps(report))
    if cfg.json_out:
        with open(cfg.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
