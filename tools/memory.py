"""Peak memory of a training step with and without the memory levers, each in a fresh process.

    .venv/bin/python tools/memory.py --device_target CPU [--config CFG] [--arch ARCH] [--image_size 224]
        [--batch_size 16] [--micro_batches 4] [--steps 1] [--variants plain recompute accumulation] [--output F]
        [--torch_ref OFFICIAL_CHECKOUT [--torch_python PYTHON]]

Variants of an optimizer step of `--batch_size` images: `plain`; `recompute` (recompute: True);
`accumulation` (grad_accumulation_steps --micro_batches, batch_size --batch_size / --micro_batches);
any YAML key can be set as for train.py.  Prints a table, then the results as one JSON line; the
columns and what --torch_ref adds: docs/benchmark.md "tools/memory.py".
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from anywhere
from src.config import early_value  # noqa: E402  (MindSpore-free)
from src.runtime.openmp import limit_openmp_threads  # noqa: E402

if early_value("graph_kernel_fusion", sys.argv[1:]):
    limit_openmp_threads()  # before MindSpore loads libgomp, which reads OMP_NUM_THREADS then

from tools.torch_ref import TorchRefError, check_torch_ref, torch_peak_memory  # noqa: E402
from src.config import MEMORY, add_output_arg, parse_args  # noqa: E402  (needs the path above)
from src.conformer import canonical_arch  # noqa: E402
from tools.memory_probe import POOL_STATISTICS, VARIANTS, pool_peak_mib  # noqa: E402

COLUMNS = (("variant", "variant"), ("images_per_step", "images/step"), ("micro_batch", "micro-batch"),
           ("built_mib", "built MiB"), ("compiled_mib", "compiled MiB"), ("step_mib", "step MiB"),
           ("peak_mib", "peak MiB"), ("pool_mib", "pool MiB"), ("compile_s", "compile s"), ("step_s", "step s"),
           ("ours_over_torch", "ours / PyTorch"))
TORCH_VARIANT = "PyTorch eager (official)"


def _script_args(parser):
    parser.add_argument("--micro_batches", type=int, default=4, help="micro-batches of the accumulation variant")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps after compiling")
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    add_output_arg(parser, "the results as JSON (they are printed in any case)", "--json_out")
    parser.add_argument("--torch_ref", default="", metavar="DIR",
                        help="checkout of github.com/pengzhiliang/Conformer: also measure the official PyTorch "
                             "model's training process (default: off)")
    parser.add_argument("--torch_python", default=sys.executable, metavar="PATH",
                        help="Python interpreter that can import torch, for --torch_ref (default: this one)")
    parser.add_argument("--child", choices=tuple(VARIANTS), help=argparse.SUPPRESS)  # set for the subprocesses


def _overrides(variant: str, batch: int, micro: int) -> list:
    return [f"--{key}={value}" for key, value in VARIANTS[variant](batch, micro).items()]


def _child(argv: list, args) -> None:
    from tools.memory_probe import measure
    cfg = parse_args(argv + _overrides(args.child, args.batch_size, args.micro_batches), script=MEMORY,
                     add_script_args=_script_args)
    print(json.dumps(dict(variant=args.child, **measure(cfg, args.steps))), flush=True)


def main() -> int:
    argv = sys.argv[1:]
    args = parse_args(argv, description=__doc__.split("\n")[0], script=MEMORY, add_script_args=_script_args)
    if args.child:
        _child(argv, args)
        return 0
    if args.steps < 1:
        print(f"memory.py: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    if args.batch_size % args.micro_batches:
        print(f"memory.py: --batch_size {args.batch_size} is not a multiple of --micro_batches {args.micro_batches}",
              file=sys.stderr)
        return 2
    if args.torch_ref:
        try:
            check_torch_ref(args.torch_ref, args.torch_python)
        except TorchRefError as e:
            print(f"memory.py: {e}", file=sys.stderr)
            return 2
    print(f"{args.arch} at {args.image_size} px, {args.batch_size} images per optimizer step, "
          f"{args.steps} step(s) after compiling, device {args.device_target}", flush=True)
    results = []
    for variant in args.variants:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--child", variant],
                              capture_output=True, text=True,
                              env=dict(os.environ, GLOG_v="3", MS_DEV_RUNTIME_CONF=POOL_STATISTICS))
        if proc.returncode:
            print(f"memory.py: variant {variant} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}",
                  file=sys.stderr)
            return 1
        row = json.loads(next(line for line in proc.stdout.splitlines()[::-1] if line.startswith("{")))
        pool = pool_peak_mib(proc.stdout)
        if pool is not None:
            row["pool_mib"] = pool
        results.append(row)
        print("  ".join(f"{title} {row.get(key, '-')}" for key, title in COLUMNS[:-1]), flush=True)  # no ratio yet
    if args.torch_ref:
        try:
            theirs = torch_peak_memory(args, canonical_arch(args.arch), args.batch_size, args.steps)
        except TorchRefError as e:
            print(f"memory.py: {e}", file=sys.stderr)
            return 1
        for row in results:
            row["ours_over_torch"] = round(row["peak_mib"] / theirs["peak_mib"], 2)
        results.append({"variant": TORCH_VARIANT, "images_per_step": args.batch_size, "micro_batch": args.batch_size,
                        **theirs})
        print(f"{TORCH_VARIANT}: peak MiB {theirs['peak_mib']}  step s {theirs['step_s']}", flush=True)
    print()
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|" + " --- |" * len(COLUMNS))
    for row in results:
        print("| " + " | ".join(str(row.get(key, "-")) for key, _ in COLUMNS) + " |")
    summary = {"arch": args.arch, "image_size": args.image_size, "device_target": args.device_target,
               "results": results}
    print(json.dumps(summary))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
