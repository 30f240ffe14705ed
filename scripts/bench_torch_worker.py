"""PyTorch side of `scripts/bench.py --torch_ref`: the official Conformer, timed as bench.py times ours.

    python scripts/bench_torch_worker.py SPEC.json

bench.py starts this file with --torch_python's interpreter, which needs torch (and the
numpy torch uses), nothing of conformer-ms's requirements.  SPEC (written by
`write_spec`) names the official checkout, the constructor arguments, the sizes and
repeats, the optimizer settings and an output folder.  The worker
- builds the official `Conformer` (src/tools/official_torch.py) under torch.manual_seed(seed),
- saves its random initial weights as the official main.py does (`{"model": state_dict}`,
  OUT/official.pth) and its eval-mode summed logits of OUT/numerics_input.npy
  (OUT/numerics_logits.npy), before anything changes the weights,
- exports the summed logits with torch.onnx.export (OUT/official.onnx: input `images`,
  output `logits`, dynamic batch),
- times eager forward (eval, torch.no_grad) at each of `batches` and, unless `train_batch`
  is 0, one train step (train mode, AdamW without decay on biases, norms and cls_token,
  mean of both heads' cross entropies) with `median_time`, which bench.py uses too,
and prints its result rows as one JSON line.  A problem is one line on stderr, exit status 2.
"""
import json
import os
import statistics
import sys
import time

PROG = "bench_torch_worker.py"
SPEC_KEYS = ("official", "hparams", "image_size", "batches", "train_batch", "repeats", "lr", "betas", "eps",
             "weight_decay", "seed", "out_dir")
ONNX_OPSET = 11  # as export.py
FILES = {"weights": "official.pth", "onnx": "official.onnx", "numerics_input": "numerics_input.npy",
         "numerics_logits": "numerics_logits.npy"}


class WorkerError(RuntimeError):
    """A problem that stops the worker, reported as one line."""


def median_time(call, repeats: int) -> float:
    """Median seconds of `repeats` timed calls after one untimed call (warm-up / compilation)."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_spec(path: str, **spec) -> None:
    missing = [k for k in SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"spec lacks {', '.join(missing)}")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2)


def read_spec(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise WorkerError(f"cannot read spec {path}: {e}") from None
    missing = [k for k in SPEC_KEYS if k not in spec] if isinstance(spec, dict) else list(SPEC_KEYS)
    if missing:
        raise WorkerError(f"spec {path} lacks {', '.join(missing)}")
    if not os.path.isfile(os.path.join(spec["official"], "conformer.py")):
        raise WorkerError(f"{spec['official']} has no conformer.py: not a checkout of pengzhiliang/Conformer")
    return spec


def _import_torch():
    try:
        import torch  # noqa: F401  (dev-only dependency, imported here so the spec checks need none)
    except ImportError as e:
        raise WorkerError(f"{sys.executable} cannot import torch ({e}); pass --torch_python with an "
                          "interpreter that has it") from None
    return torch


def _summed_logits(torch, model):
    """`model` with the official inference output: conv head + transformer head."""
    class SummedLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            conv_logits, trans_logits = self.model(images)
            return conv_logits + trans_logits
    return SummedLogits()


def _param_groups(model, weight_decay: float) -> list:
    """timm / the official main.py: no weight decay on 1-D parameters (biases, norms) and cls_token."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") or name == "cls_token" else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def run(spec: dict) -> list:
    torch = _import_torch()
    import numpy as np
    from src.tools.official_torch import load_official_conformer

    out = spec["out_dir"]
    size = spec["image_size"]
    torch.manual_seed(spec["seed"])
    model = load_official_conformer(spec["official"])(**spec["hparams"])
    model.eval()
    summed = _summed_logits(torch, model).eval()
    torch.save({"model": model.state_dict()}, os.path.join(out, FILES["weights"]))
    with torch.no_grad():
        inputs = torch.from_numpy(np.load(os.path.join(out, FILES["numerics_input"])))
        np.save(os.path.join(out, FILES["numerics_logits"]), summed(inputs).numpy())
    torch.onnx.export(summed, (torch.zeros(2, 3, size, size),), os.path.join(out, FILES["onnx"]), dynamo=False,
                      opset_version=ONNX_OPSET, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})

    rows, note = [], f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    generator = np.random.default_rng(0)
    for batch in spec["batches"]:
        x = torch.from_numpy(generator.standard_normal((batch, 3, size, size)).astype(np.float32))
        with torch.no_grad():
            seconds = median_time(lambda: summed(x), spec["repeats"])
        rows.append({"what": "PyTorch eager forward", "batch": batch, "img_per_s": batch / seconds, "note": note})

    batch = spec["train_batch"]
    if not batch:
        return rows
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, spec["weight_decay"]), lr=spec["lr"],
                                  betas=tuple(spec["betas"]), eps=spec["eps"])
    x = torch.from_numpy(generator.standard_normal((batch, 3, size, size)).astype(np.float32))
    target = torch.arange(batch) % spec["hparams"]["num_classes"]
    criterion = torch.nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        conv_logits, trans_logits = model(x)
        loss = (criterion(conv_logits, target) + criterion(trans_logits, target)) / 2
        loss.backward()
        optimizer.step()
    seconds = median_time(step, spec["repeats"])
    rows.append({"what": "PyTorch eager train step (adamw)", "batch": batch, "img_per_s": batch / seconds,
                 "note": note})
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: {PROG} SPEC.json", file=sys.stderr)
        return 2
    try:
        rows = run(read_spec(argv[0]))
    except WorkerError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for src.tools
    sys.exit(main())
