"""One benchmark run on this machine, every figure with its ratio to a baseline of the same run.

    .venv/bin/python tools/bench.py --device_target CPU [--config CFG] [--arch ARCH] [--image_size 224]
        [--batches 1 16] [--train_batch 16] [--repeats 3] [--parts data forward train plain convs deploy dispatch probe kernels cpu_kernels kernel_kinds feed]
        [--ort_threads N] [--torch_ref OFFICIAL_CHECKOUT [--torch_python PYTHON]] [--output bench.json]

Parts: data pipeline, MindSpore forward and train step, MINDIR, onnxruntime, and a NumPy matmul probe
of the machine's reachable GFLOP/s.  Each timed call follows an untimed one (MindSpore compiles there),
img/s is batch / median time, two runtimes compared are timed in interleaved rounds, and weights are
seeded random ones.  Prints a table, then the results as one JSON line; what each part measures and
what --torch_ref adds: docs/benchmark.md.
"""
import argparse
import contextlib
import itertools
import json
import os
import statistics
import sys
import subprocess
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
from src.config import early_value  # noqa: E402  (MindSpore-free)
from src.runtime.openmp import limit_openmp_threads  # noqa: E402

if early_value("graph_kernel_fusion", sys.argv[1:]):
    limit_openmp_threads()  # before MindSpore loads libgomp, which reads OMP_NUM_THREADS then

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import nn, ops  # noqa: E402
from PIL import Image  # noqa: E402

from tools.bench_torch_worker import FILES  # noqa: E402
from tools.cpu_probe import cpu_seconds, timed_beside_busy_thread  # noqa: E402
from tools.kernel_cases import kernel_cases  # noqa: E402
from tools.torch_ref import TorchWorker, check_torch_ref  # noqa: E402
from src.config import BENCH, add_output_arg, parse_args  # noqa: E402  (needs the path above)
from src.conformer import canonical_arch, create_model, create_model_from_config, gmacs  # noqa: E402
from src.convert.state_dict import convert_state_dict, unwrap_state_dict  # noqa: E402
from src.convert.torch_checkpoint import load_torch_checkpoint  # noqa: E402
from src.data.batch_finish import batch_finish  # noqa: E402
from src.data.batch_workers import BatchWorkers  # noqa: E402
from src.data.imagenet import DecodedImages, create_dataset, data_workers  # noqa: E402
from src.errors import ConformerError  # noqa: E402
from src.kernels import KernelCell, LayerNorm, Softmax, Transpose, kernels_in_use, set_plain_kernels  # noqa: E402
from src.kernels.square_sum import SquareSum  # noqa: E402
from src.kernels.dense import Dense  # noqa: E402
from src.kernels.switch import cpu_kernels_wanted  # noqa: E402
from src.deploy.export import export_model, load_mindir, output_names  # noqa: E402
from src.inference.network import InferenceNet  # noqa: E402
from src.deploy.onnx_inference import add_ort_threads_arg, onnx_forward  # noqa: E402
from src.layers.conv2d import Conv2d, conv2d, cpu_formulation, set_plain_convs  # noqa: E402
from src.layers.conv_block import batch_norm  # noqa: E402
from src.layers.exportable_ops import GELU, TorchMaxPool2d  # noqa: E402
from src.runtime.console import run_main  # noqa: E402
from src.runtime.device import init_context, set_graph_kernel_fusion  # noqa: E402
from src.trainer.loss import create_loss  # noqa: E402
from src.trainer.optimizer import create_optimizer  # noqa: E402
from src.trainer.train_one_step import NetWithLoss, TrainOneStep  # noqa: E402
from src.variants import variant_hparams  # noqa: E402

PARTS = ("data", "forward", "train", "plain", "convs", "deploy", "dispatch", "probe", "kernels", "cpu_kernels",
         "kernel_kinds", "feed")
# kernels, cpu_kernels, kernel_kinds: a diagnosis rather than a figure of the model; feed needs a dataset on disk
DEFAULT_PARTS = PARTS[:-4]
PLAIN = ", plain Conv2D"  # rows of the model without its CPU convolution formulation
NUMERICS_BATCH = 2
NUMERICS_TOLERANCE = 1e-4  # max |diff| relative to the largest |logit|
# ours / PyTorch: each PyTorch row is compared with the row of ours at the same batch
OURS_ORT = "onnxruntime (our ONNX, official weights)"
TORCH_ORT = "onnxruntime (torch.onnx export)"
TORCH_PAIRS = {"PyTorch eager forward": "MindSpore GRAPH forward", TORCH_ORT: OURS_ORT}
# at least: a pair of runtimes can differ by a few percent, and this shared machine has slow spells
INTERLEAVED_ROUNDS = 10
# tiny ops in the long chain of the dispatch part: enough that the chain dwarfs one call's fixed cost
CHAIN_OPS = 400
DATA_ROUNDS = 3  # each round of the data part's train rows: every configuration, DATA_EPOCHS epochs
DATA_EPOCHS = 2
TORCH_LOADER = "torch"  # the data part's anchor: tools/bench_torch_loader.py under --torch_python
EVAL_ROW = "eval, "  # prefix of the data part's eval pipeline rows
HOST_FINISHED = "process, host-finished"  # a data row of float32 batches normalised, erased and mixed by the workers
FEED_ROUNDS = 3  # each round of the feed part is three runs of --feed_batches batches
FEED_DATA, FEED_FIXED, FEED_FED = ("data: the config's training pipeline", "feed: train step, one fixed batch",
                                   "feed: train step fed by the pipeline")
FEED_FINISH = "feed: batch finishing graph alone"  # uint8 -> normalised, erased, mixed (src/data/batch_finish.py)


class BenchError(ConformerError, RuntimeError):
    """A problem that stops the benchmark, reported as one line."""


def median_time(call, repeats: int) -> float:
    """Median seconds of `repeats` timed calls after one untimed call (warm-up / compilation)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def clocked(call):
    """`call` as a timer: a call that returns its own seconds, as `interleaved_medians` wants."""
    def timer() -> float:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    return timer


def interleaved_medians(timers: dict, rounds: int) -> dict:
    """{name: median seconds} of each timer (a call returning its own seconds: `clocked`, or the
    PyTorch worker's, timed in its process), one untimed call each first, then `rounds` rounds in
    which every timer runs once, in reversed order every other round: a slow spell of the machine
    hits all calls alike, where back-to-back series would each catch a different one."""
    for timer in timers.values():
        timer()
    times = {name: [] for name in timers}
    for i in range(rounds):
        for name, timer in (list(timers.items()) if i % 2 == 0 else list(timers.items())[::-1]):
            times[name].append(timer())
    return {name: statistics.median(t) for name, t in times.items()}


def _script_args(parser):
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="forward batch sizes")
    parser.add_argument("--train_batch", type=int, default=16, help="batch size of the timed train step")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--images", type=int, default=64, help="JPEGs (500x375) written for the data pipeline")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(DEFAULT_PARTS),
                        help=f"what to measure (default: {' '.join(DEFAULT_PARTS)})")
    parser.add_argument("--feed_batches", type=int, default=40, help="timed batches per round of the feed part")
    add_output_arg(parser, "the results as JSON (they are printed in any case)", "--json_out")
    add_ort_threads_arg(parser)
    parser.add_argument("--torch_ref", default="", metavar="DIR",
                        help="checkout of github.com/pengzhiliang/Conformer: also time the official PyTorch "
                             "model and check the numerics of its converted weights (default: off)")
    parser.add_argument("--torch_python", default=sys.executable, metavar="PATH",
                        help="Python interpreter that can import torch, for --torch_ref and for the data part's "
                             "torch DataLoader rows (default: this one; those rows need it given or --torch_ref)")


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


def _time_data(data_cfg, epochs: int, pool, busy: bool, split: str = "train", raw: bool = True) -> tuple:
    """(seconds, CPU seconds of the data work, images) of `epochs` pipelines of `split` (one per epoch,
    as train.py; train: raw batches, or `raw` False finished on the host), after one untimed epoch; a
    busy thread's own CPU is not counted."""
    def run(epoch):
        data = create_dataset(data_cfg, split, epoch=epoch, batch_workers=pool, raw=raw)
        return sum(len(b) for b, *_ in data.create_tuple_iterator(num_epochs=1, output_numpy=True))

    run(0)
    pids = pool.pids() if pool else []
    return timed_beside_busy_thread(lambda: sum(run(epoch) for epoch in range(1, epochs + 1)), busy, pids)


def _time_torch_loader(cfg, data_cfg, root: str, workers: int, busy: bool) -> tuple:
    """(seconds, CPU seconds, images) of tools/bench_torch_loader.py under --torch_python: the same
    epochs of the same recipe through torch's DataLoader."""
    keys = ("data_url", "train_dir", "batch_size", "seed", "image_size", "min_crop", "aa_interpolation", "hflip",
            "auto_augment", "re_prob", "re_mode", "re_count", "num_classes", "mixup", "cutmix", "mixup_prob",
            "switch_prob", "mixup_mode", "label_smoothing")
    spec = os.path.join(root, "torch_loader.json")
    with open(spec, "w") as f:
        json.dump({"cfg": {k: getattr(data_cfg, k) for k in keys}, "workers": workers, "epochs": DATA_EPOCHS,
                   "busy": busy}, f)
    done = subprocess.run([cfg.torch_python, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                          "bench_torch_loader.py"), spec],
                          capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"bench_torch_loader.py under {cfg.torch_python} failed: {last}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["seconds"], result["cpu"], result["images"]


def bench_data(cfg) -> list:
    """img/s and CPU-ms per image of the full train recipe (one pipeline per epoch, as train.py) in
    worker threads and in worker processes, at 1 worker and at the config's count (capped at the CPU
    count), and of the eval pipeline at the config's count, each alone and beside a busy pure-Python
    thread in the process, in interleaved rounds (--repeats, at least 3), medians; one row of the
    train batches finished on the host (float32) instead of raw, what the graph's finishing saves."""
    rows = []
    with tempfile.TemporaryDirectory() as root, contextlib.ExitStack() as stack:
        _write_jpegs(root, cfg.images)
        # the generated dataset, not the config's: its keys are no flags of bench.py; repeated_aug only
        # decides which images an epoch holds, not their cost, and needs >= 256 of them
        data_cfg = argparse.Namespace(**{**vars(cfg), **dict(
            dataset="ImageNet", data_url=root, train_dir="train", val_dir="val", train_labels="", val_labels="",
            train_num_samples=-1, val_num_samples=-1, num_classes=4, batch_size=16, repeated_aug=0)})
        calls = {}
        for workers in sorted({1, data_workers(data_cfg)}):
            for mode in ("thread", "process"):
                mode_cfg = argparse.Namespace(**{**vars(data_cfg), "num_parallel_workers": workers,
                                                 "data_workers_mode": mode})
                pool = stack.enter_context(contextlib.closing(BatchWorkers(workers))) if mode == "process" else None
                for busy in (False, True):
                    calls[(mode, workers, busy)] = (lambda c=mode_cfg, p=pool, b=busy:
                                                    _time_data(c, DATA_EPOCHS, p, b))
                if workers > 1:
                    for busy in (False, True):
                        calls[(EVAL_ROW + mode, workers, busy)] = (lambda c=mode_cfg, p=pool, b=busy:
                                                               _time_data(c, DATA_EPOCHS, p, b, split="val"))
                if mode == "process" and workers > 1:  # what finishing batches in the graph saves the host
                    calls[(HOST_FINISHED, workers, False)] = (lambda c=mode_cfg, p=pool:
                                                              _time_data(c, DATA_EPOCHS, p, False, raw=False))
            if cfg.torch_ref or cfg.torch_python != sys.executable:
                for busy in (False, True):
                    calls[(TORCH_LOADER, workers, busy)] = (lambda w=workers, b=busy:
                                                            _time_torch_loader(cfg, data_cfg, root, w, b))
        rounds = max(cfg.repeats, DATA_ROUNDS)
        results = {key: [] for key in calls}
        load = os.getloadavg()[0]
        for i in range(rounds):
            for key, call in (list(calls.items()) if i % 2 == 0 else list(calls.items())[::-1]):
                results[key].append(call())
        load = f"load {load:.1f} before, {os.getloadavg()[0]:.1f} after"
        for (mode, workers, busy), runs in results.items():
            rate = statistics.median(images / seconds for seconds, _, images in runs)
            cpu_ms = statistics.median(1e3 * cpu / images for _, cpu, images in runs)
            kind = {TORCH_LOADER: "torch DataLoader worker process",
                    HOST_FINISHED: "process"}.get(mode, mode).replace(EVAL_ROW, "")
            plural = "" if workers == 1 else ("s" if kind == "thread" else "es")
            what = "eval transform" if mode.startswith(EVAL_ROW) else "train recipe"
            rows.append({"what": f"data: {what}, {workers} {kind}{plural}"
                                 + (", busy Python thread beside" if busy else "")
                                 + (", finished on the host (float32)" if mode == HOST_FINISHED else ""),
                         "batch": 16, "img_per_s": rate, "cpu_ms_per_img": cpu_ms,
                         "note": f"{cpu_ms:.1f} CPU-ms/img; median of {rounds} interleaved rounds of "
                                 f"{DATA_EPOCHS} epochs of {cfg.images} JPEGs 500x375; {load}"})
    return rows


def bench_feed(cfg) -> list:
    """The config's training pipeline alone, the graph that finishes its raw batches alone, the train
    step (finishing included) on one fixed batch, and the step fed by the pipeline (train.py's loop:
    one pipeline per epoch, each raw batch finished in the graph, the loss read after each step), in
    interleaved rounds; each round times `feed_batches` batches after 3 untimed ones. One untimed
    round first fills `cache_decoded_mib`, as the first epoch of a run does."""
    batch, count = cfg.train_batch, cfg.feed_batches
    feed_cfg = argparse.Namespace(**{**vars(cfg), "batch_size": batch})
    decoded = DecodedImages(cfg.cache_decoded_mib) if cfg.cache_decoded_mib else None
    pool = BatchWorkers(data_workers(cfg)) if cfg.data_workers_mode == "process" else None  # one per run, as train.py
    pids = pool.pids() if pool else []
    net = create_model_from_config(cfg)
    rounds = max(cfg.repeats, FEED_ROUNDS)
    optimizer = create_optimizer(cfg, net, np.full((rounds + 1) * 3 * (count + 4), cfg.base_lr, np.float32))
    step = TrainOneStep(NetWithLoss(net, create_loss(cfg)), optimizer, loss_scale=float(cfg.loss_scale),
                        dynamic_loss_scale=cfg.is_dynamic_loss_scale,
                        clip_grad_norm=cfg.clip_grad_norm if cfg.use_clip_grad_norm else 0.0)
    step.set_train(True)
    finish = batch_finish(cfg)

    def batches(train: bool):
        data = create_dataset(feed_cfg, "train", decoded=decoded, batch_workers=pool, raw=True)
        if data.get_dataset_size() < count + 3:
            raise BenchError(f"feed: {data.get_dataset_size()} batches of {batch} in the training set, "
                             f"fewer than --feed_batches {count} + 3")
        return data.create_tuple_iterator(num_epochs=1, output_numpy=not train)

    fixed = next(batches(True))  # one raw batch, as the pipeline gives it

    def timed(source, train: bool, finish_only: bool = False):
        for k, (pixels, targets, weights, boxes) in enumerate(source):
            if k == 3:
                start, cpu = time.perf_counter(), cpu_seconds(pids)
            if k == count + 3:
                break
            if finish_only:
                finish(pixels, weights, boxes).asnumpy()
            elif train:  # as train.py: the raw batch finished in a graph, then the step
                step(finish(pixels, weights, boxes), targets)[0].asnumpy()
        return time.perf_counter() - start, cpu_seconds(pids) - cpu

    calls = {FEED_DATA: lambda: timed(batches(False), False),
             FEED_FINISH: lambda: timed(itertools.repeat(fixed, count + 3), True, finish_only=True),
             FEED_FIXED: lambda: timed(itertools.repeat(fixed, count + 3), True),
             FEED_FED: lambda: timed(batches(True), True)}
    with contextlib.closing(pool) if pool else contextlib.nullcontext():
        for call in calls.values():
            call()  # compiles; fills the decoded-image store
        times = {name: [] for name in calls}
        for i in range(rounds):
            for name, call in (list(calls.items()) if i % 2 == 0 else list(calls.items())[::-1]):
                times[name].append(call())
    seconds = {name: statistics.median(t for t, _ in ts) for name, ts in times.items()}
    cpu_us = {name: 1e6 * statistics.median(c for _, c in ts) / (count * batch) for name, ts in times.items()}
    fixed_rate = batch * count / seconds[FEED_FIXED]
    rows = []
    for name in calls:
        rate = batch * count / seconds[name]
        note = f"{cpu_us[name]:.0f} CPU-us/img; median of {rounds} interleaved rounds of {count} batches"
        if name == FEED_FED:
            note = f"{rate / fixed_rate:.2f}x the fixed-batch step; " + note
        rows.append({"what": name, "batch": batch, "img_per_s": rate, "cpu_us_per_img": cpu_us[name],
                     "note": note})
    return rows


def _images(batch: int, size: int) -> np.ndarray:
    return np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)


def _with_torch(cfg, worker, cmd: str, batch: int, ours: str, theirs: str, call) -> list:
    """Our row and PyTorch's of `call` and the worker's `cmd` at `batch`, timed interleaved."""
    rounds = max(cfg.repeats, INTERLEAVED_ROUNDS)
    seconds = interleaved_medians({ours: clocked(call), theirs: lambda: worker.seconds(cmd, batch)}, rounds)
    note = f"interleaved with the other, median of {rounds}"
    return [{"what": ours, "batch": batch, "img_per_s": batch / seconds[ours], "note": note},
            {"what": theirs, "batch": batch, "img_per_s": batch / seconds[theirs], "note": f"{worker.note}; {note}"}]


def bench_forward(cfg, net, suffix: str = "", worker=None) -> list:
    """Our forward at each batch; with `worker`, interleaved with the official model's."""
    summed = InferenceNet(net)
    summed.set_train(False)
    rows, what = [], "MindSpore GRAPH forward" + suffix
    for batch in cfg.batches:
        x = ms.Tensor(_images(batch, cfg.image_size))
        call = lambda: summed(x).asnumpy()  # noqa: E731
        if worker:
            rows += _with_torch(cfg, worker, "forward", batch, what, "PyTorch eager forward", call)
        else:
            rows.append({"what": what, "batch": batch, "img_per_s": batch / median_time(call, cfg.repeats)})
    return rows


def conv_shapes(cfg, net) -> list:
    """(in, out, kernel, stride, padding, input height, input width) of each distinct convolution
    that the device formulation changes, recorded by one PYNATIVE forward at batch 1."""
    shapes = []

    def record(cell, inputs):
        h, w = inputs[0].shape[2:]
        shape = (cell.in_channels, cell.out_channels, *cell.square, h, w)
        if shape not in shapes:
            shapes.append(shape)

    convs = [c for _, c in net.cells_and_names() if isinstance(c, Conv2d) and c.as_matmul]
    handles = [c.register_forward_pre_hook(record) for c in convs]
    mode = ms.get_context("mode")  # hooks need PYNATIVE; --pynative_mode may already have chosen it
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        net.set_train(False)
        net(ms.Tensor(_images(1, cfg.image_size)))
    finally:
        ms.set_context(mode=mode)
        for handle in handles:
            handle.remove()
    return shapes


class _SumGrads(nn.Cell):
    """Forward and backward of sum(op(*inputs)): the gradients of every input and of op's weights."""

    def __init__(self, op, inputs: int = 1):
        super().__init__()
        self.op = op
        self.grad = ms.grad(self._loss, grad_position=tuple(range(inputs)), weights=op.trainable_params() or None)

    def _loss(self, *x):
        return self.op(*x).sum()

    def construct(self, *x):
        return self.grad(*x)


def _wait(outputs) -> None:
    """Block until every tensor of a (nested) output is computed."""
    for out in outputs if isinstance(outputs, (tuple, list)) else (outputs,):
        _wait(out) if isinstance(out, (tuple, list)) else out.asnumpy()


def bench_convs(cfg, net) -> list:
    """Each convolution as Conv2D and as the CPU matmul formulation, at the train batch."""
    rows, batch = [], cfg.train_batch
    for cin, cout, k, s, p, h, w in conv_shapes(cfg, net):
        x = ms.Tensor(np.random.default_rng(h).standard_normal((batch, cin, h, w)).astype(np.float32))
        times = {}
        for plain in (True, False):
            conv = conv2d(cin, cout, k, stride=s, padding=p, bias=False)
            conv.choose_formulation(plain)
            grads = _SumGrads(conv)
            conv(x), grads(x)  # MindSpore compiles a lone cell on its first *two* calls
            times[plain] = (median_time(lambda: conv(x).asnumpy(), cfg.repeats),
                            median_time(lambda: _wait(grads(x)), cfg.repeats))
        (fwd_plain, both_plain), (fwd, both) = times[True], times[False]
        rows.append({"what": f"conv {k}x{k}/{s} {cin}->{cout} @{h}x{w}", "batch": batch, "img_per_s": batch / fwd,
                     "note": f"ms fwd / fwd+bwd: Conv2D {fwd_plain * 1e3:.1f} / {both_plain * 1e3:.1f}, "
                             f"matmul {fwd * 1e3:.1f} / {both * 1e3:.1f} ({fwd_plain / fwd:.1f}x / "
                             f"{both_plain / both:.1f}x)"})
    return rows


class _Scores(nn.Cell):
    def __init__(self):
        super().__init__()
        self.product = ops.BatchMatMul(transpose_b=True)  # as the attention computes q @ k^T

    def construct(self, q, k):
        return self.product(q, k)


class _HeadSplit(KernelCell):
    """[B, N, 3C] -> [B, 3 * heads, N, C / heads], as the attention splits its qkv projection (its
    Transpose cell: the own kernel on CPU)."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads
        self.move_heads = Transpose((0, 2, 1, 3))
        self.use_kernels = self.move_heads.use_kernels

    def choose_kernels(self, plain: bool = False) -> None:
        self.move_heads.choose_kernels(plain)
        self.use_kernels = self.move_heads.use_kernels

    def construct(self, x):
        n = x.shape[1]
        return self.move_heads(x.reshape(-1, n, 3 * self.heads, x.shape[2] // (3 * self.heads)))


def kernel_op(case: dict) -> nn.Cell:
    """The MindSpore cell of one case of tools/kernel_cases.py: the model's own layer or op."""
    shape, kind = case["shape"], case["kind"]
    if kind == "linear":
        return Dense(shape[-1], case["out"])
    if kind == "layernorm":
        return LayerNorm(shape[-1], epsilon=1e-6)
    if kind == "gelu":
        return GELU(False)
    if kind == "softmax":
        return Softmax()
    if kind == "scores":
        return _Scores()
    if kind == "head_split":
        return _HeadSplit(case["heads"])
    if kind == "conv3x3":
        return conv2d(shape[1], shape[1], 3, padding=1)
    if kind == "maxpool":
        return TorchMaxPool2d(3, 2)
    return batch_norm(shape[1])


def bench_kernels(cfg, worker=None) -> list:
    """Each op of tools/kernel_cases.py at the train batch, forward and forward+backward of its sum, as
    MindSpore's op and, where the project has one (src/kernels, on CPU), as its own kernel; with `worker`,
    the same op in PyTorch eager; all timed interleaved."""
    rows, batch = [], cfg.train_batch
    rounds = max(cfg.repeats, INTERLEAVED_ROUNDS)
    for name, case in kernel_cases(variant_hparams(cfg.arch_name), cfg.image_size, batch).items():
        rng = np.random.default_rng(cfg.seed)
        inputs = [ms.Tensor(rng.standard_normal(case["shape"]).astype(np.float32))
                  for _ in range(2 if case["kind"] == "scores" else 1)]
        op = kernel_op(case)
        op.set_train(True)  # BatchNorm normalises by the batch's statistics, as in a train step
        own = op if kernels_in_use(op) else None  # the op, or a layer holding one (a convolution's columns)
        if own:
            op = set_plain_kernels(kernel_op(case))
        grads = _SumGrads(op, len(inputs))
        timers = {"fwd": clocked(lambda: _wait(op(*inputs))), "both": clocked(lambda: _wait(grads(*inputs)))}
        if own:
            own_grads = _SumGrads(own, len(inputs))
            timers.update({"own fwd": clocked(lambda: _wait(own(*inputs))),
                           "own both": clocked(lambda: _wait(own_grads(*inputs)))})
            timers["own fwd"](), timers["own both"]()
        if worker:
            timers.update({f"torch {k}": lambda k=k: worker.seconds("kernel", batch, name=name, backward=k == "both")
                           for k in ("fwd", "both")})
        timers["fwd"](), timers["both"]()  # MindSpore compiles a lone cell on its first *two* calls
        ms_ = interleaved_medians(timers, rounds)
        row = {"what": f"kernel: {name}", "batch": batch, "img_per_s": None, "shape": list(case["shape"]),
               "ms_fwd": ms_["fwd"] * 1e3, "ms_fwd_bwd": ms_["both"] * 1e3,
               "note": f"MindSpore fwd {ms_['fwd'] * 1e3:.2f} ms, fwd+bwd {ms_['both'] * 1e3:.2f} ms"}
        if own:
            row.update(own_ms_fwd=ms_["own fwd"] * 1e3, own_ms_fwd_bwd=ms_["own both"] * 1e3)
            row["note"] += f"; own kernel {ms_['own fwd'] * 1e3:.2f} / {ms_['own both'] * 1e3:.2f} ms"
        if worker:
            row.update(torch_ms_fwd=ms_["torch fwd"] * 1e3, torch_ms_fwd_bwd=ms_["torch both"] * 1e3,
                       ours_over_torch=ms_["torch both"] / ms_["both"])
            row["note"] += (f"; PyTorch {ms_['torch fwd'] * 1e3:.2f} / {ms_['torch both'] * 1e3:.2f} ms "
                            f"(fwd {ms_['torch fwd'] / ms_['fwd']:.2f}x)")
            if own:
                row["own_over_torch"] = ms_["torch both"] / ms_["own both"]
                row["note"] += f" (own kernel fwd+bwd {row['own_over_torch']:.2f}x)"
            row["note"] += f"; median of {rounds} interleaved"
        rows.append(row)
    return rows


def _run_plain(cell: nn.Cell, kinds) -> nn.Cell:
    """`cell` with its own kernels of the `kinds` (KernelCell class names) switched to MindSpore's ops."""
    for _, sub in cell.cells_and_names():
        if isinstance(sub, KernelCell) and type(sub).__name__ in kinds:
            sub.choose_kernels(plain=True)
    return cell


def train_step_call(cfg, net, updates: int, plain_kinds=frozenset()):
    """A call of one train step of `net` on a fixed batch of cfg.train_batch, for `updates` calls; the
    step's own kernels (KernelCell classes) named in `plain_kinds` run MindSpore's ops."""
    optimizer = create_optimizer(cfg, net, np.full(updates, cfg.base_lr, np.float32))
    step = TrainOneStep(NetWithLoss(net, create_loss(cfg)), optimizer, loss_scale=float(cfg.loss_scale),
                        dynamic_loss_scale=cfg.is_dynamic_loss_scale,
                        clip_grad_norm=cfg.clip_grad_norm if cfg.use_clip_grad_norm else 0.0)
    _run_plain(step, plain_kinds)
    step.set_train(True)
    batch = cfg.train_batch
    x = ms.Tensor(_images(batch, cfg.image_size))
    targets = ms.Tensor(np.eye(cfg.num_classes, dtype=np.float32)[np.arange(batch) % cfg.num_classes])
    return lambda: step(x, targets)[0].asnumpy()


def bench_train(cfg, net, suffix: str = "", worker=None) -> list:
    """Our train step; with `worker`, interleaved with the official model's."""
    batch = cfg.train_batch
    # one lr entry per update: the warm-up call and the most rounds either way of timing takes
    call = train_step_call(cfg, net, max(cfg.repeats, INTERLEAVED_ROUNDS) + 2)
    what = f"MindSpore train step ({cfg.optimizer})" + suffix
    if worker:
        rows = _with_torch(cfg, worker, "train", batch, what, "PyTorch eager train step (adamw)", call)
    else:
        rows = [{"what": what, "batch": batch, "img_per_s": batch / median_time(call, cfg.repeats)}]
    net.set_train(False)
    return rows


def bench_cpu_kernels(cfg, each_kind: bool = False) -> list:
    """The forward at the largest batch and the train step two ways, timed interleaved in one process:
    MindSpore's ops and the own kernels; with `each_kind`, also the own kernels with one kind of them
    (a KernelCell class: BatchNorm2d, Columns, ...) switched back to MindSpore's op, each kind in turn."""
    if not cpu_kernels_wanted():  # not on CPU, switched off (cpu_kernels), or no library
        return []
    first = create_model_from_config(cfg)
    # the model's kinds and the train step's own (SquareSum, the gradients' global norm)
    kinds = sorted({type(cell).__name__ for _, cell in first.cells_and_names() if isinstance(cell, KernelCell)}
                   | {SquareSum.__name__})
    plain = {"MindSpore ops": set(kinds), "own kernels": set(),
             **({f"own kernels but {kind}": {kind} for kind in kinds} if each_kind else {})}
    nets = {}
    for label, kinds_off in plain.items():
        net = first if not nets else create_model_from_config(cfg)
        if nets:
            ms.load_param_into_net(net, {p.name: ms.Parameter(p.data.copy(), name=p.name)
                                         for p in first.get_parameters()})
        nets[label] = _run_plain(net, kinds_off)
    rounds = max(cfg.repeats, INTERLEAVED_ROUNDS)
    batch = max(cfg.batches)
    x = ms.Tensor(_images(batch, cfg.image_size))
    calls = {"forward": {}, "train step": {}}
    for label, net in nets.items():
        summed = InferenceNet(net)
        summed.set_train(False)
        calls["forward"][label] = lambda summed=summed: summed(x).asnumpy()
    for label, net in nets.items():
        calls["train step"][label] = train_step_call(cfg, net, rounds + 2, plain[label])
    rows = []
    for what, timed in calls.items():
        load = os.getloadavg()[0]
        seconds = interleaved_medians({label: clocked(call) for label, call in timed.items()}, rounds)
        size = batch if what == "forward" else cfg.train_batch
        for label, s in seconds.items():
            rows.append({"what": f"cpu_kernels: {what}, {label}", "batch": size, "img_per_s": size / s,
                         "note": f"{seconds['MindSpore ops'] / s:.2f}x MindSpore's ops; interleaved, "
                                 f"median of {rounds}; load average {load:.1f} before, "
                                 f"{os.getloadavg()[0]:.1f} after"})
    return rows


class _Chain(nn.Cell):
    """`length` dependent multiplications of 64 floats: kernels too small to compute anything, so
    their time is what the runtime spends per kernel."""

    def __init__(self, length: int):
        super().__init__()
        self.length = length

    def construct(self, x):
        for _ in range(self.length):
            x = x * 1.0001
        return x


def bench_dispatch(cfg, worker=None) -> list:
    """The cost of one kernel: a GRAPH call of 1 + CHAIN_OPS tiny ops minus a call of 1, per op;
    with `worker`, PyTorch eager's cost per op the same way, interleaved."""
    x = ms.Tensor(np.ones(64, np.float32))
    short, long = _Chain(1), _Chain(1 + CHAIN_OPS)
    timers = {"ours 1": clocked(lambda: short(x).asnumpy()), "ours long": clocked(lambda: long(x).asnumpy())}
    if worker:
        timers.update({"torch 1": lambda: worker.seconds("chain", 1),
                       "torch long": lambda: worker.seconds("chain", 1 + CHAIN_OPS)})
    seconds = interleaved_medians(timers, max(cfg.repeats, INTERLEAVED_ROUNDS))
    us = {who: (seconds[f"{who} long"] - seconds[f"{who} 1"]) / CHAIN_OPS * 1e6 for who in ("ours", "torch")
          if f"{who} 1" in seconds}
    rows = [{"what": "dispatch: MindSpore GRAPH, per tiny kernel", "batch": None, "img_per_s": None,
             "us_per_kernel": us["ours"], "note": f"{us['ours']:.1f} us per kernel; a call of one op "
                                                  f"{seconds['ours 1'] * 1e3:.2f} ms"}]
    if worker:
        rows.append({"what": "dispatch: PyTorch eager, per tiny op", "batch": None, "img_per_s": None,
                     "us_per_kernel": us["torch"], "ours_over_torch": us["torch"] / us["ours"],
                     "note": f"{us['torch']:.1f} us per op; {worker.note}"})
    return rows


def bench_deploy(cfg, net) -> list:
    summed = InferenceNet(net)
    summed.set_train(False)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        example = ms.Tensor(np.zeros((1, 3, cfg.image_size, cfg.image_size), np.float32))
        mindir = load_mindir(export_model(summed, example, os.path.join(workdir, "model"), "MINDIR"))
        onnx_path = export_model(summed, example, os.path.join(workdir, "model"), "ONNX", output_names(False))
        ort_forward = onnx_forward(onnx_path, cfg.device_target, cfg.image_size, cfg.ort_threads)
        for batch in cfg.batches:
            images = _images(batch, cfg.image_size)
            x = ms.Tensor(images)
            reference = summed(x).asnumpy()
            for name, call in (("MINDIR GraphCell", lambda: mindir(x).asnumpy()),
                               ("onnxruntime", lambda: ort_forward(images))):
                seconds = median_time(call, cfg.repeats)
                diff = np.abs(call() - reference).max() / max(1.0, np.abs(reference).max())
                rows.append({"what": name, "batch": batch, "img_per_s": batch / seconds,
                             "note": f"max diff {diff:.1e} of the logit scale vs MindSpore"})
    return rows


def bench_probe(cfg) -> list:
    """Reachable float32 GFLOP/s of this machine: a NumPy (BLAS) matmul, all cores."""
    n = 1024
    a, b = (np.random.default_rng(i).standard_normal((n, n)).astype(np.float32) for i in range(2))
    seconds = median_time(lambda: a @ b, max(cfg.repeats, 5))
    return [{"what": "probe: NumPy matmul 1024^2", "batch": 0, "img_per_s": 0.0,
             "gflops": 2 * n ** 3 / seconds / 1e9}]


def bench_onnx_pair(cfg, ours, theirs) -> list:
    """onnxruntime on our ONNX and on the torch.onnx export of the same weights (so the same
    activations), through the same session code, interleaved."""
    rows = []
    for batch in cfg.batches:
        images = _images(batch, cfg.image_size)
        rounds = max(cfg.repeats, INTERLEAVED_ROUNDS)
        seconds = interleaved_medians({OURS_ORT: clocked(lambda: ours(images)),
                                       TORCH_ORT: clocked(lambda: theirs(images))}, rounds)
        rows += [{"what": what, "batch": batch, "img_per_s": batch / seconds[what],
                  "note": f"interleaved with the other, median of {rounds}"} for what in (OURS_ORT, TORCH_ORT)]
    return rows


def numerics_row(what: str, got: np.ndarray, reference: np.ndarray) -> dict:
    diff = float(np.abs(got - reference).max())
    relative = diff / max(1.0, float(np.abs(reference).max()))
    verdict = "ok" if relative <= NUMERICS_TOLERANCE else f"ABOVE {NUMERICS_TOLERANCE:g}"
    return {"what": what, "batch": len(reference), "img_per_s": 0.0, "max_abs_diff": diff,
            "relative_diff": relative,
            "note": f"max abs diff {diff:.2e} = {relative:.1e} of the logit scale {np.abs(reference).max():.3g} "
                    f"({verdict})"}


def converted_official(cfg, workdir: str) -> tuple:
    """(summed-logits net, forward of its ONNX in onnxruntime) holding the official model's random
    weights, converted."""
    state_dict, _ = unwrap_state_dict(load_torch_checkpoint(os.path.join(workdir, FILES["weights"])))
    net = create_model(cfg.arch_name, num_classes=cfg.num_classes)  # official numerics: erf GELU, torch max-pool
    expected = {p.name: p.shape for p in net.get_parameters()}
    params = {k: ms.Parameter(ms.Tensor(v), name=k) for k, v in convert_state_dict(state_dict, expected).items()}
    not_loaded, _ = ms.load_param_into_net(net, params, strict_load=True)
    if not_loaded:
        raise BenchError(f"converted weights leave {len(not_loaded)} parameters unset, e.g. {not_loaded[0]}")
    summed = InferenceNet(net)
    summed.set_train(False)
    example = ms.Tensor(np.zeros((1, 3, cfg.image_size, cfg.image_size), np.float32))
    onnx_path = export_model(summed, example, os.path.join(workdir, "converted"), "ONNX", output_names(False))
    return summed, onnx_forward(onnx_path, cfg.device_target, cfg.image_size, cfg.ort_threads)


def bench_numerics(workdir: str, summed, ours, theirs) -> list:
    """MindSpore, our ONNX and the torch export, all with the official weights, against PyTorch (eval mode)."""
    images = np.load(os.path.join(workdir, FILES["numerics_input"]))
    torch_logits = np.load(os.path.join(workdir, FILES["numerics_logits"]))
    return [numerics_row("numerics: MindSpore vs PyTorch", summed(ms.Tensor(images)).asnumpy(), torch_logits),
            numerics_row("numerics: our ONNX (onnxruntime) vs PyTorch", ours(images), torch_logits),
            numerics_row("numerics: torch.onnx export (onnxruntime) vs PyTorch", theirs(images), torch_logits)]


def start_torch_worker(cfg, workdir: str) -> TorchWorker:
    """The official model, live; it leaves its weights, ONNX and numerics logits in `workdir`."""
    np.save(os.path.join(workdir, FILES["numerics_input"]), _images(NUMERICS_BATCH, cfg.image_size))
    return TorchWorker(cfg, cfg.arch_name, workdir)


def bench_torch_files(cfg, workdir: str) -> list:
    """The onnxruntime pair and the numerics, from the files the worker left in `workdir`."""
    summed, ours = converted_official(cfg, workdir)
    theirs = onnx_forward(os.path.join(workdir, FILES["onnx"]), cfg.device_target, cfg.image_size, cfg.ort_threads)
    rows = bench_onnx_pair(cfg, ours, theirs) if "deploy" in cfg.parts else []
    return rows + bench_numerics(workdir, summed, ours, theirs)


def add_ratios(cfg, rows: list) -> None:
    """Model GFLOP/s over the probe's, each deploy runtime over MindSpore at the same batch, and
    ours over PyTorch: MindSpore forward / eager forward and train step / train step, onnxruntime
    on our ONNX / on the torch.onnx export."""
    probe = next((r["gflops"] for r in rows if "gflops" in r), None)
    macs = gmacs(cfg.arch_name, cfg.image_size, cfg.num_classes)
    forward = {r["batch"]: r["img_per_s"] for r in rows if r["what"] == "MindSpore GRAPH forward"}
    for r in rows:
        if r["img_per_s"] and not r["what"].startswith(("data", "conv ")) and r["what"] != FEED_FINISH:  # the model's
            flops = 3 if "train" in r["what"] else 1  # backward ~ 2x forward
            r["gflops"] = r["img_per_s"] * 2 * macs * flops
            if probe:
                r["vs_probe"] = r["gflops"] / probe
        if r["what"] in ("MINDIR GraphCell", "onnxruntime") and r["batch"] in forward:
            r["vs_mindspore"] = r["img_per_s"] / forward[r["batch"]]
    fast = {(r["what"], r["batch"]): r["img_per_s"] for r in rows}
    for r in rows:  # the model with the plain Conv2D op, relative to the CPU formulation
        if r["what"].endswith(PLAIN) and fast.get((r["what"][:-len(PLAIN)], r["batch"])):
            r["vs_mindspore"] = r["img_per_s"] / fast[(r["what"][:-len(PLAIN)], r["batch"])]
    ours = {(r["what"], r["batch"]): r["img_per_s"] for r in rows}
    ours_train = next((r["img_per_s"] for r in rows if r["what"].startswith("MindSpore train step")), None)
    for r in rows:
        counterpart = ours_train if r["what"].startswith("PyTorch eager train step") else \
            ours.get((TORCH_PAIRS.get(r["what"]), r["batch"]))
        if counterpart and r["img_per_s"]:
            r["ours_over_torch"] = counterpart / r["img_per_s"]


def print_table(cfg, rows: list) -> None:
    print(f"{cfg.arch_name} at {cfg.image_size} px on {cfg.device_target}, {os.cpu_count()} cores, "
          f"MindSpore {ms.__version__}")
    print("| what | batch | img/s | GFLOP/s | vs probe | vs MindSpore | ours / PyTorch | note |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [r["what"], r["batch"] or "", f"{r['img_per_s']:.2f}" if r["img_per_s"] else "",
                 f"{r['gflops']:.1f}" if "gflops" in r else "", f"{r['vs_probe']:.2f}" if "vs_probe" in r else "",
                 f"{r['vs_mindspore']:.2f}x" if "vs_mindspore" in r else "",
                 f"{r['ours_over_torch']:.2f}x" if "ours_over_torch" in r else "", r.get("note", "")]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def main() -> int:
    cfg = parse_args(script=BENCH, description=__doc__.splitlines()[0], add_script_args=_script_args)
    return run(cfg)


def run(cfg) -> int:
    if cfg.torch_ref:
        check_torch_ref(cfg.torch_ref, cfg.torch_python)
    init_context(cfg)
    set_graph_kernel_fusion(cfg.graph_kernel_fusion)
    cfg.arch_name = canonical_arch(cfg.arch)
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory()) if cfg.torch_ref else ""
        rows = measure(cfg, workdir)
        if cfg.torch_ref:
            rows += bench_torch_files(cfg, workdir)
    if "probe" in cfg.parts:
        rows += bench_probe(cfg)
    add_ratios(cfg, rows)
    print_table(cfg, rows)
    report = {"arch": cfg.arch_name, "image_size": cfg.image_size, "device_target": cfg.device_target,
              "mindspore": ms.__version__, "cpu_count": os.cpu_count(), "results": rows}
    print(json.dumps(report))
    if cfg.output:
        with open(cfg.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


def bench_runtime(cfg, worker) -> list:
    """The parts that time the runtime and its single ops rather than the model: dispatch, kernels."""
    rows = bench_dispatch(cfg, worker) if "dispatch" in cfg.parts else []
    return rows + (bench_kernels(cfg, worker) if "kernels" in cfg.parts else [])


def measure(cfg, workdir: str) -> list:
    """Our rows; with --torch_ref, the official model's forward and train rows interleaved with ours
    (its worker leaves its files in `workdir` and has quit when this returns)."""
    rows = []
    if "data" in cfg.parts:
        rows += bench_data(cfg)
    if "feed" in cfg.parts:
        rows += bench_feed(cfg)
    if {"forward", "train", "deploy"} & set(cfg.parts):
        net = create_model_from_config(cfg)
        with start_torch_worker(cfg, workdir) if workdir else contextlib.nullcontext() as worker:
            if "forward" in cfg.parts:
                rows += bench_forward(cfg, net, worker=worker)
            if "deploy" in cfg.parts:
                rows += bench_deploy(cfg, net)
            if "train" in cfg.parts:
                rows += bench_train(cfg, net, worker=worker)
            rows += bench_runtime(cfg, worker)
    elif {"dispatch", "kernels"} & set(cfg.parts):
        with start_torch_worker(cfg, workdir) if workdir else contextlib.nullcontext() as worker:
            rows += bench_runtime(cfg, worker)
    elif workdir:  # the worker still writes the files the numerics need
        start_torch_worker(cfg, workdir).close()
    if cpu_formulation() and {"plain", "convs"} & set(cfg.parts):
        net = create_model_from_config(cfg)
        if "convs" in cfg.parts:
            rows += bench_convs(cfg, net)
        if "plain" in cfg.parts:
            set_plain_convs(net, True)
            rows += bench_forward(cfg, net, PLAIN)
            if "train" in cfg.parts:
                rows += bench_train(cfg, net, PLAIN)
    if {"cpu_kernels", "kernel_kinds"} & set(cfg.parts):
        rows += bench_cpu_kernels(cfg, each_kind="kernel_kinds" in cfg.parts)
    return rows


if __name__ == "__main__":
    sys.exit(run_main(main, "bench.py"))
