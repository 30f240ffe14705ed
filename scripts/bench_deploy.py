"""Forward throughput of one set of weights in MindSpore GRAPH mode, as an exported MINDIR
(nn.GraphCell) and as an exported ONNX file in onnxruntime.

    .venv/bin/python scripts/bench_deploy.py --device_target CPU [--config CFG] [--pretrained CKPT]
                                             [--batches 1 16] [--repeats 3] [--json_out bench.json]

Defaults: conformer_tiny_patch16 at 224 px with seeded random weights (speed does not depend on
the values).  Each (runtime, batch) gets one untimed first call (MindSpore compiles there), then
`--repeats` timed calls; img/s is batch / median time.  Prints a table, then the results as JSON.
"""
import json
import os
import sys
import tempfile
import time

import numpy as np
import mindspore as ms

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere

from src.config import parse_args  # noqa: E402  (needs the path above)
from src.conformer import create_model_from_config  # noqa: E402
from src.tools.checkpoint import load_weights  # noqa: E402
from src.tools.device import init_context  # noqa: E402
from src.tools.export import InferenceNet, export_model, load_mindir, output_names  # noqa: E402
from src.tools.inference import onnx_forward  # noqa: E402


def _script_args(parser):
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes (default: 1 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per batch size (default: 3)")
    parser.add_argument("--json_out", default="", help="also write the results to this JSON file")


def _time(forward, images, repeats: int) -> dict:
    start = time.perf_counter()
    logits = forward(images)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(images)
        times.append(time.perf_counter() - start)
    median = float(np.median(times))
    return {"first_call_s": round(first, 3), "median_ms": round(median * 1000, 1),
            "img_per_s": round(len(images) / median, 3), "logits": logits}


def _runtimes(cfg, workdir: str) -> dict:
    """{name: forward(images) -> logits}, all holding the same weights."""
    net = create_model_from_config(cfg)
    if cfg.pretrained:
        load_weights(net, cfg.pretrained)
    summed = InferenceNet(net)
    summed.set_train(False)
    example = ms.Tensor(np.zeros((1, 3, cfg.image_size, cfg.image_size), np.float32))
    mindir = load_mindir(export_model(summed, example, os.path.join(workdir, "model"), "MINDIR"))
    onnx_path = export_model(summed, example, os.path.join(workdir, "model"), "ONNX", output_names(False))
    return {
        "MindSpore GRAPH": lambda x: summed(ms.Tensor(x)).asnumpy(),
        "MINDIR GraphCell": lambda x: mindir(ms.Tensor(x)).asnumpy(),
        "onnxruntime": onnx_forward(onnx_path, cfg.device_target, cfg.image_size),
    }


def main() -> int:
    cfg = parse_args(description=__doc__.splitlines()[0], add_script_args=_script_args)
    init_context(cfg)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        runtimes = _runtimes(cfg, workdir)
        for batch in cfg.batches:
            images = np.random.default_rng(batch).standard_normal(
                (batch, 3, cfg.image_size, cfg.image_size)).astype(np.float32)
            reference = None
            for name, forward in runtimes.items():
                result = _time(forward, images, cfg.repeats)
                logits = result.pop("logits")
                reference = logits if reference is None else reference
                # random-init logits reach ~1e3: the difference is relative to their scale
                result["max_rel_diff"] = float(np.abs(logits - reference).max() / max(1.0, np.abs(reference).max()))
                rows.append({"runtime": name, "batch": batch, **result})
                print(f"  {name} batch {batch}: {result['img_per_s']} img/s", file=sys.stderr, flush=True)
    baseline = {r["batch"]: r["img_per_s"] for r in rows if r["runtime"] == "MindSpore GRAPH"}
    for row in rows:
        row["vs_mindspore"] = round(row["img_per_s"] / baseline[row["batch"]], 2)
    _print_table(cfg, rows)
    report = {"arch": cfg.arch, "image_size": cfg.image_size, "device_target": cfg.device_target,
              "mindspore": ms.__version__, "cpu_count": os.cpu_count(), "results": rows}
    print(json.dumps(report))
    if cfg.json_out:
        with open(cfg.json_out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


def _print_table(cfg, rows):
    print(f"{cfg.arch} at {cfg.image_size} px on {cfg.device_target} ({os.cpu_count()} cores)")
    print("| runtime | batch | first call (s) | median (ms) | img/s | vs MindSpore GRAPH | max rel diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['runtime']} | {r['batch']} | {r['first_call_s']:.1f} | {r['median_ms']:.0f} | "
              f"{r['img_per_s']:.2f} | {r['vs_mindspore']:.2f}x | {r['max_rel_diff']:.1e} |")


if __name__ == "__main__":
    sys.exit(main())
