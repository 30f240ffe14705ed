"""The whole pipeline on a laptop CPU: Fashion-MNIST -> train -> eval -> export -> ONNX eval -> inference.

    python demo.py [--workdir demo_out] [--config src/configs/demo_cpu.yaml] [--src DIR] [--quick]
                   [--train_args "--epochs 1 ..."] [--no_install]

Prepares the data (tools/fashion_mnist.py: Fashion-MNIST from the Debian package, installed with
apt-get as root unless --no_install; otherwise scikit-learn's digits), then runs the user-facing
scripts as the README shows them, each command printed first: train.py, eval.py on the whole test
split, export.py to ONNX and MINDIR, eval_onnx.py, and infer.py on held-out images from the
checkpoint and from the MINDIR. Ends with a summary whose last line is
`demo: Top1-Acc=... on N test images in ... s`; a silent step gets a progress line with an estimate
of what is left. Outputs of an earlier demo in WORKDIR are removed first, the prepared data kept.
Exit status: 0, or that of the first step that failed (its command and last lines are shown).
"""
import argparse
import csv
import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

from src.errors import ConformerError
from src.inference.heads import HEADS
from src.trainer.run_record import CONFIG_HEADER
from tools.fashion_mnist import DEFAULT_SRC, HOW_TO_GET, IdxError, have_source, prepare_digits, prepare_fashion_mnist

REPO = os.path.dirname(os.path.abspath(__file__))

DEFAULT_CONFIG = os.path.join("src", "configs", "demo_cpu.yaml")
HEARTBEAT = 30.0  # seconds of silence before demo.py prints a progress line of its own
HELD_OUT_PER_CLASS = 2
QUICK_TRAIN_ARGS = ["--epochs", "1", "--train_num_samples", "-1", "--val_num_samples", "-1",
                    "--warmup_length", "0", "--print_loss_every", "5"]
# The digits (1,437 training and 360 test images) are far fewer than the config's subsets
DIGITS_TRAIN_ARGS = ["--train_num_samples", "-1", "--val_num_samples", "-1", "--epochs", "8"]
# Throughput guesses for the time estimates until this run has measured its own (img/s)
DEFAULT_RATES = {"train": 500.0, "eval": 800.0, "onnx": 5000.0}  # refined from this run's progress lines
STARTUP = {"train": 25.0, "eval": 8.0, "export": 5.0, "onnx": 2.0, "infer": 5.0}  # import + compile, s
# train.py's progress line: the mean img/s of the summary is in no file train.py writes, and the
# live estimates need it while train.py runs, before any file is written
PROGRESS_RATE = re.compile(r"^epoch \d+/\d+ step \d+/\d+ .*img/s ([\d.]+)")


class ConfigFold:
    """Folds train.py's resolved configuration (one indented line per key) into one line naming the
    file that holds it: the demo shows the run, config.yaml keeps the settings."""

    def __init__(self, config_file: str):
        self.config_file, self.keys = config_file, None

    def shown(self, line: str) -> list:
        """The lines to print for one line of output: none while inside the block."""
        if self.keys is not None:
            if line.startswith("  "):
                self.keys += line[2] != " "  # a key's own line, not a nested value's
                return []
            folded, self.keys = f"  ({self.keys} settings, as in {self.config_file})", None
            return [folded, *self.shown(line)]
        if line == CONFIG_HEADER:
            self.keys = 0
            return ["resolved configuration:"]
        return [line]


class DemoError(ConformerError):
    """A file a step should have written is missing or not what it writes (one line naming it)."""


def read_json(path: str, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise DemoError(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None


def read_results(path: str, heads=HEADS, keys=("top1", "top5", "loss")) -> dict:
    """A --results_file of eval.py / eval_onnx.py, checked to hold what the summary prints."""
    results = read_json(path, "the results file")
    try:
        int(results["num_images"])
        for head in heads:
            for key in keys:
                float(results[head][key])
    except (KeyError, TypeError, ValueError) as e:
        raise DemoError(f"{path}: not a results file (no {e})") from None
    return results


def best_checkpoint(best_json: str) -> str:
    best = read_json(best_json, "train.py's best-checkpoint index")
    if not isinstance(best, dict) or not best:
        raise DemoError(f"{best_json}: no best checkpoint listed")
    return max(best, key=best.get)


def trained_epochs(metrics_csv: str) -> int:
    """Epochs train.py validated: one metrics.csv row each."""
    try:
        with open(metrics_csv, newline="") as f:
            return len(list(csv.DictReader(f)))
    except OSError as e:
        raise DemoError(f"{metrics_csv}: cannot read train.py's metrics: {e.strerror}") from None


def summary_lines(facts: dict, files: dict, stage_times: dict, train_rate: float, total: float) -> list:
    """The summary as printed, from the files the scripts wrote.  `facts`: data_name, data,
    train_count, n_test, arch, per_epoch, val_images, truth ({held-out path: label}); `files`:
    summary_dir, best_json, eval_json, onnx_json, pred_ckpt, pred_mindir, onnx_path, mindir_path."""
    heads = read_results(files["eval_json"])
    onnx = read_results(files["onnx_json"], heads=HEADS[:1], keys=("top1", "top5"))
    by_ckpt = read_json(files["pred_ckpt"], "infer.py's predictions")
    by_mindir = read_json(files["pred_mindir"], "infer.py's predictions")
    truth = facts["truth"]
    right = sum(by_ckpt.get(p) == label for p, label in truth.items())
    agree = sum(by_ckpt.get(p) == by_mindir.get(p) for p in truth)
    ckpt = best_checkpoint(files["best_json"])
    epochs = trained_epochs(os.path.join(files["summary_dir"], "metrics.csv"))
    n_eval = int(heads["num_images"])
    lines = ["", "demo: summary",
             f"  data        {facts['data_name']}, {facts['train_count']} train / {facts['n_test']} test images in "
             f"{facts['data']} ({stage_times['data']:.0f} s)",
             f"  train.py    {facts['arch']}, {epochs} epoch(s) x {facts['per_epoch']} images, {train_rate:.1f} img/s "
             f"({stage_times['train']:.0f} s with per-epoch validation on {facts['val_images']} images)"]
    for name, key in zip(("summed heads", "conv head", "transformer head"), HEADS):
        res = heads[key]
        lines.append(f"  eval.py     {name:17s} Top1-Acc {res['top1']:.4f}  Top5-Acc {res['top5']:.4f}  "
                     f"Loss {res['loss']:.4f}")
    lines.append(f"  eval.py     {n_eval} images in {stage_times['eval']:.0f} s")
    lines.append(f"  eval_onnx   Top1-Acc {onnx['summed']['top1']:.4f}  Top5-Acc {onnx['summed']['top5']:.4f}  "
                 f"({stage_times['onnx']:.0f} s, onnxruntime)")
    lines.append(f"  infer.py    {right}/{len(truth)} held-out images right; the MINDIR agrees on {agree}/{len(truth)}")
    lines.append(f"  checkpoint  {ckpt}")
    lines.append(f"  JSON        {files['pred_ckpt']} (and {os.path.basename(files['pred_mindir'])})")
    lines.append(f"  ONNX        {files['onnx_path']}")
    lines.append(f"  MINDIR      {files['mindir_path']}")
    curves = os.path.join(files["summary_dir"], "metrics.png")
    lines.append(f"  curves      {curves if os.path.exists(curves) else '(no matplotlib: see metrics.csv)'}")
    lines.append(f"  metrics     {os.path.join(files['summary_dir'], 'metrics.csv')}")
    lines.append("  time        " + ", ".join(f"{k} {v:.0f} s" for k, v in stage_times.items()))
    lines.append(f"demo: Top1-Acc={heads['summed']['top1']:.4f} on {n_eval} test images in {total:.0f} s")
    return lines


def log(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def fmt(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Demo:
    def __init__(self, args):
        self.args = args
        self.start = time.time()
        self.workdir = os.path.abspath(args.workdir)
        # relative to the current folder when it exists there, else to the repository
        config = os.path.abspath(args.config) if os.path.isfile(args.config) else os.path.join(REPO, args.config)
        inside = os.path.commonpath([config, REPO]) == REPO
        self.config = os.path.relpath(config, REPO) if inside else config  # the scripts run in REPO
        self.rates = dict(DEFAULT_RATES)
        self.stage_times = {}
        self.train_lines = []
        self.plan = {}  # stage -> estimated seconds (refined as rates are measured)
        self.progress_lines = 0
        self.val_images = 0
        self.metrics_written = None  # metrics.csv's mtime when last seen: each change is a validation's end

    # ----- running one script -----
    def run(self, stage: str, script: str, *script_args, estimate=None) -> list:
        """Run `python script args` in the repository, stream its output, print a heartbeat line while
        it is silent; returns its output lines. A failure stops the demo with the script's status."""
        cmd = [sys.executable, script, *map(str, script_args)]
        print(f"$ python {script} {' '.join(shlex.quote(str(a)) for a in script_args)}", flush=True)
        env = dict(os.environ)
        env.setdefault("GLOG_v", "3")  # MindSpore's C++ log: errors only
        env["PYTHONUNBUFFERED"] = "1"
        started = time.time()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        lines_q = queue.Queue()
        threading.Thread(target=lambda: ([lines_q.put(line) for line in proc.stdout], lines_q.put(None)),
                         daemon=True).start()
        lines, last_output = [], time.time()
        fold = ConfigFold(os.path.join(self.workdir, "summary_dir", "config.yaml"))
        while True:
            try:
                line = lines_q.get(timeout=1.0)
            except queue.Empty:
                if time.time() - last_output >= HEARTBEAT:
                    self.heartbeat(stage, time.time() - started, estimate)
                    last_output = time.time()
                continue
            if line is None:
                break
            line = line.rstrip("\n")
            lines.append(line)
            for shown in fold.shown(line):
                print(f"  {shown}", flush=True)
            last_output = time.time()
            if stage == "train":
                self.on_train_line(line, time.time())
        status = proc.wait()
        self.stage_times[stage] = self.stage_times.get(stage, 0.0) + time.time() - started
        if status != 0:
            log(f"{script} failed with exit status {status} after {time.time() - started:.0f} s; command:")
            print("  " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            raise SystemExit(status)
        return lines

    def heartbeat(self, stage: str, elapsed: float, estimate) -> None:
        total = time.time() - self.start
        left_stage = (estimate() if callable(estimate) else (estimate or 0.0)) - elapsed
        left_all = max(left_stage, 0.0) + sum(self.plan.get(s, 0.0) for s in self.remaining_after(stage))
        log(f"{stage} running {fmt(elapsed)}, about {fmt(max(left_stage, 0))} left in this step; "
            f"demo at {fmt(total)}, ETA {fmt(left_all)}")

    def remaining_after(self, stage: str) -> list:
        order = list(self.plan)
        return order[order.index(stage) + 1:] if stage in order else []

    def on_train_line(self, line: str, now: float) -> None:
        """Measure train and validation speed for the estimates: img/s from train.py's progress
        lines (no file holds it), a validation's end from when metrics.csv was last written."""
        self.train_lines.append((now, line))
        m = PROGRESS_RATE.search(line)
        if m:
            self.progress_lines += 1
            if self.progress_lines > 1 and float(m.group(1)) > 0:  # the first one includes the compilation
                self.rates["train"] = float(m.group(1))
        try:
            written = os.path.getmtime(os.path.join(self.workdir, "summary_dir", "metrics.csv"))
        except OSError:  # no epoch validated yet
            return
        if written == self.metrics_written:
            return
        self.metrics_written = written
        # train.py appends the row right after validating, which began after the epoch's last step
        steps = [t for t, text in self.train_lines if t <= written and PROGRESS_RATE.search(text)]
        if steps and self.val_images and written - steps[-1] > 0.5:
            self.rates["eval"] = self.val_images / (written - steps[-1])

    # ----- the steps -----
    def prepare_data(self) -> tuple:
        """-> (dataset root, dataset name)."""
        started = time.time()
        if self.args.quick:
            root = os.path.join(self.workdir, "data", "fashion-mnist-quick")
            per_class = (64, 20)
        else:
            root = os.path.join(self.workdir, "data", "fashion-mnist")
            per_class = (-1, -1)
        src = self.args.src
        if not have_source(src) and src == DEFAULT_SRC and not self.args.no_install:
            self.try_apt_install()
        if have_source(src):
            print(f"$ python -m tools.fashion_mnist --out {root}"
                  + (f" --src {src}" if src != DEFAULT_SRC else "")
                  + (f" --train_per_class {per_class[0]} --val_per_class {per_class[1]}" if self.args.quick else ""),
                  flush=True)
            try:
                prepare_fashion_mnist(root, src, *per_class, log=lambda m: print(f"  {m}", flush=True))
            except IdxError as e:
                log(f"error: {e}")
                raise SystemExit(2)
            name = "Fashion-MNIST"
        else:
            log(HOW_TO_GET.format(src=src) + "; using scikit-learn's digits instead")
            root = os.path.join(self.workdir, "data", "digits")
            print(f"$ python -m tools.fashion_mnist --digits --out {root}", flush=True)
            prepare_digits(root, log=lambda m: print(f"  {m}", flush=True))
            name = "scikit-learn digits"
        self.stage_times["data"] = time.time() - started
        return root, name

    def try_apt_install(self) -> None:
        if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
            return
        log("Fashion-MNIST missing; trying `apt-get install -y dataset-fashion-mnist` (root; --no_install skips)")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"],
                    ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"]):
            try:
                ok = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    timeout=300).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if cmd[1] == "install" and ok:
                return

    def clean_outputs(self) -> None:
        """Remove what an earlier demo wrote in the work folder (train.py refuses to overwrite checkpoints)."""
        removed = []
        for name in ("checkpoints", "best_checkpoints", "summary_dir", "export", "heldout", "predictions",
                     "results"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                shutil.rmtree(path)
                removed.append(name)
        if removed:
            log(f"removed the outputs of an earlier demo in {self.workdir}: {', '.join(removed)}")

    def held_out(self, data: str, classes: list, samples: list) -> dict:
        """Copy the first HELD_OUT_PER_CLASS test images of each class to WORKDIR/heldout; -> {path: label}."""
        folder = os.path.join(self.workdir, "heldout")
        os.makedirs(folder, exist_ok=True)
        chosen, per_class = {}, {}
        for path, label in samples:
            if per_class.get(label, 0) < HELD_OUT_PER_CLASS:
                per_class[label] = per_class.get(label, 0) + 1
                dest = os.path.join(folder, f"{classes[label]}_{os.path.basename(path)}")
                shutil.copyfile(path, dest)
                chosen[os.path.abspath(dest)] = label
        return chosen

    def main(self) -> int:
        a = self.args
        log(f"the CPU demo: data -> train.py -> eval.py -> export.py -> eval_onnx.py -> infer.py in {self.workdir}")
        os.makedirs(self.workdir, exist_ok=True)
        self.clean_outputs()
        data, data_name = self.prepare_data()

        from src.data.folder import scan_image_folder  # MindSpore-free
        classes, val_samples = scan_image_folder(os.path.join(data, "val"))
        train_count = len(scan_image_folder(os.path.join(data, "train"))[1])
        n_test = len(val_samples)

        from src.config import load_yaml  # what train.py will read, to size the estimates
        cfg = load_yaml(os.path.join(REPO, self.config))
        train_args = DIGITS_TRAIN_ARGS[:] if data_name != "Fashion-MNIST" else []
        train_args += QUICK_TRAIN_ARGS if a.quick else []
        train_args += shlex.split(a.train_args)
        overrides = dict(zip(train_args[::2], train_args[1::2]))
        epochs = int(overrides.get("--epochs", cfg["epochs"]))
        per_epoch = int(overrides.get("--train_num_samples", cfg["train_num_samples"]))
        per_epoch = train_count if per_epoch == -1 else per_epoch
        val_n = int(overrides.get("--val_num_samples", cfg["val_num_samples"]))
        self.val_images = n_test if val_n == -1 else val_n
        arch = overrides.get("--arch", cfg["arch"])
        outs = {k: os.path.join(self.workdir, k) for k in ("summary_dir", "checkpoints", "best_checkpoints",
                                                          "export", "predictions", "results")}
        images_trained = epochs * per_epoch
        self.plan = {
            "train": STARTUP["train"] + images_trained / self.rates["train"]
            + epochs * self.val_images / self.rates["eval"],
            "eval": STARTUP["eval"] + n_test / self.rates["eval"],
            "export": 2 * STARTUP["export"],
            "onnx": STARTUP["onnx"] + n_test / self.rates["onnx"],
            "infer": 2 * STARTUP["infer"],
        }
        log(f"{data_name}: {train_count} training and {n_test} test images, {len(classes)} classes; "
            f"training {arch} for {epochs} epoch(s) of {per_epoch} images")

        # 2. train
        def train_estimate():
            return (STARTUP["train"] + images_trained / self.rates["train"]
                    + epochs * self.val_images / self.rates["eval"])
        self.run("train", "train.py", "--config", self.config, "--data_url", data,
                 "--summary_root_dir", outs["summary_dir"], "--ckpt_root_dir", outs["checkpoints"],
                 "--best_ckpt_root_dir", outs["best_checkpoints"], *train_args, estimate=train_estimate)
        best_json = os.path.join(outs["best_checkpoints"], "best.json")
        ckpt = best_checkpoint(best_json)
        self.refresh_plan(n_test)

        # 3. eval on the whole test split
        eval_json = os.path.join(outs["results"], "eval.json")
        self.run("eval", "eval.py", "--config", self.config, "--pretrained", ckpt, "--data_url", data,
                 "--val_num_samples", "-1", "--results_file", eval_json, estimate=self.plan["eval"])
        n_eval = int(read_results(eval_json)["num_images"])
        self.rates["eval"] = n_eval / max(self.stage_times["eval"] - STARTUP["eval"], 1.0)

        # 4. export
        onnx_path = os.path.join(outs["export"], f"{arch}.onnx")
        mindir_path = os.path.join(outs["export"], f"{arch}.mindir")
        os.makedirs(outs["export"], exist_ok=True)
        for fmt_name, path in (("ONNX", onnx_path), ("MINDIR", mindir_path)):
            self.run("export", "export.py", "--config", self.config, "--file_format", fmt_name, "--pretrained", ckpt,
                     "--arch", arch, "--output", path, estimate=STARTUP["export"])

        # 5. ONNX evaluation in onnxruntime
        onnx_json = os.path.join(outs["results"], "eval_onnx.json")
        self.run("onnx", "eval_onnx.py", os.path.join(data, "val"), "--onnx_path", onnx_path, "-m", "CPU",
                 "--config", self.config, "--results_file", onnx_json, estimate=self.plan["onnx"])

        # 6. inference on held-out images, from the checkpoint and from the MINDIR
        truth = self.held_out(data, classes, val_samples)
        os.makedirs(outs["predictions"], exist_ok=True)
        pred_ckpt = os.path.join(outs["predictions"], "predictions.json")
        pred_mindir = os.path.join(outs["predictions"], "predictions_mindir.json")
        heldout = os.path.join(self.workdir, "heldout")
        self.run("infer", "infer.py", heldout, "--checkpoint", ckpt, "--arch", arch, "--config", self.config,
                 "--output", pred_ckpt, "--class_names", os.path.join(data, "train"), estimate=STARTUP["infer"])
        self.run("infer", "infer.py", heldout, "--mindir", mindir_path, "--config", self.config,
                 "--output", pred_mindir, estimate=STARTUP["infer"])

        # summary
        facts = {"data_name": data_name, "data": data, "train_count": train_count, "n_test": n_test, "arch": arch,
                 "per_epoch": per_epoch, "val_images": self.val_images, "truth": truth}
        files = {"summary_dir": outs["summary_dir"], "best_json": best_json, "eval_json": eval_json,
                 "onnx_json": onnx_json, "pred_ckpt": pred_ckpt, "pred_mindir": pred_mindir,
                 "onnx_path": onnx_path, "mindir_path": mindir_path}
        for line in summary_lines(facts, files, self.stage_times, self.mean_train_rate(), time.time() - self.start):
            print(line, flush=True)
        return 0

    def refresh_plan(self, n_test: int) -> None:
        self.plan["train"] = 0.0
        self.plan["eval"] = STARTUP["eval"] + n_test / self.rates["eval"]
        self.plan["onnx"] = STARTUP["onnx"] + n_test / self.rates["onnx"]

    def mean_train_rate(self) -> float:
        """Mean of train.py's img/s over its progress lines (they time training steps only)."""
        rates = [float(m.group(1)) for _, line in self.train_lines for m in [PROGRESS_RATE.search(line)] if m]
        return sum(rates) / len(rates) if rates else 0.0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="demo_out", help="where data and outputs go (default: %(default)s)")
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="training config (default: %(default)s)")
    parser.add_argument("--src", default=DEFAULT_SRC, help="folder with the Fashion-MNIST idx files "
                                                            "(default: %(default)s)")
    parser.add_argument("--train_args", default="", help="extra train.py options, e.g. \"--epochs 1\"")
    parser.add_argument("--quick", action="store_true", help="64 training images per class, 1 epoch: a smoke test")
    parser.add_argument("--no_install", action="store_true", help="never run apt-get for the dataset")
    args = parser.parse_args(argv)
    try:
        return Demo(args).main()
    except DemoError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
