"""PyTorch side of `tools/bench.py --torch_ref` and `tools/memory.py --torch_ref`: the official Conformer.

    python tools/bench_torch_worker.py SPEC.json

Started by bench.py and memory.py under --torch_python's interpreter (torch and its NumPy, nothing of
conformer-ms's requirements); its SPEC, its two modes and the JSON lines it answers:
docs/development.md "The PyTorch side of the tools".  A problem is one line on stderr, exit status 2.
"""
import json
import os
import statistics
import sys
import time

PROG = "bench_torch_worker.py"
COMMON_KEYS = ("mode", "official", "hparams", "image_size", "lr", "betas", "eps", "weight_decay", "seed")
MODE_KEYS = {"serve": ("out_dir",), "memory": ("batch", "steps")}
COMMANDS = ("forward", "train", "chain", "kernel", "quit")
ONNX_OPSET = 11  # as export.py
FILES = {"weights": "official.pth", "onnx": "official.onnx", "numerics_input": "numerics_input.npy",
         "numerics_logits": "numerics_logits.npy"}


class WorkerError(RuntimeError):
    """A problem that stops the worker, reported as one line."""


def _missing(spec: dict) -> list:
    if not isinstance(spec, dict):
        return list(COMMON_KEYS)
    return [k for k in COMMON_KEYS + MODE_KEYS.get(spec.get("mode"), ()) if k not in spec]


def write_spec(path: str, **spec) -> None:
    if spec.get("mode") not in MODE_KEYS:
        raise ValueError(f"spec mode {spec.get('mode')!r}; known: {', '.join(MODE_KEYS)}")
    missing = _missing(spec)
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
    missing = _missing(spec)
    if missing:
        raise WorkerError(f"spec {path} lacks {', '.join(missing)}")
    if spec["mode"] not in MODE_KEYS:
        raise WorkerError(f"spec {path}: mode {spec['mode']!r}, known: {', '.join(MODE_KEYS)}")
    if not os.path.isfile(os.path.join(spec["official"], "conformer.py")):
        raise WorkerError(f"{spec['official']} has no conformer.py: not a checkout of pengzhiliang/Conformer")
    return spec


def parse_command(line: str) -> tuple:
    """(cmd, batch, options) of one protocol line; batch is 0 for quit (for chain: the number of ops);
    options: {"name": ..., "backward": ...} for kernel, else {}."""
    try:
        command = json.loads(line)
    except ValueError:
        raise WorkerError(f"command {line.strip()!r} is not JSON") from None
    cmd = command.get("cmd") if isinstance(command, dict) else None
    if cmd not in COMMANDS:
        raise WorkerError(f"command {line.strip()!r}: cmd must be one of {', '.join(COMMANDS)}")
    if cmd == "quit":
        return cmd, 0, {}
    batch = command.get("batch")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise WorkerError(f"command {line.strip()!r}: batch must be a positive integer")
    if cmd != "kernel":
        return cmd, batch, {}
    if not isinstance(command.get("name"), str) or not isinstance(command.get("backward"), bool):
        raise WorkerError(f"command {line.strip()!r}: kernel needs a name (string) and backward (true or false)")
    return cmd, batch, {"name": command["name"], "backward": command["backward"]}


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


class Official:
    """The official model with its eager forward and train step on seeded random images."""

    def __init__(self, spec: dict):
        self.torch = torch = _import_torch()
        from tools.official_torch import load_official_conformer

        self.spec = spec
        torch.manual_seed(spec["seed"])
        self.model = load_official_conformer(spec["official"])(**spec["hparams"])
        self.model.eval()
        self.summed = _summed_logits(torch, self.model).eval()
        self.criterion = torch.nn.CrossEntropyLoss()
        self.optimizer = None  # built by the first train step, so a forward-only run allocates no moments
        self.images = {}
        self.kernels = {}

    def _images(self, batch: int):
        if batch not in self.images:
            import numpy as np
            size = self.spec["image_size"]
            pixels = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
            self.images[batch] = self.torch.from_numpy(pixels)
        return self.images[batch]

    def forward(self, batch: int) -> float:
        x = self._images(batch)
        self.model.eval()
        with self.torch.no_grad():
            start = time.perf_counter()
            self.summed(x)
            return time.perf_counter() - start

    def train(self, batch: int) -> float:
        torch, spec = self.torch, self.spec
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(_param_groups(self.model, spec["weight_decay"]), lr=spec["lr"],
                                               betas=tuple(spec["betas"]), eps=spec["eps"])
        x = self._images(batch)
        target = torch.arange(batch) % spec["hparams"]["num_classes"]
        self.model.train()
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        conv_logits, trans_logits = self.model(x)
        loss = (self.criterion(conv_logits, target) + self.criterion(trans_logits, target)) / 2
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def chain(self, length: int) -> float:
        """`length` dependent multiplications of 64 floats, eagerly: the cost of dispatching an op."""
        x = self.torch.ones(64)
        with self.torch.no_grad():
            start = time.perf_counter()
            for _ in range(length):
                x = x * 1.0001
            return time.perf_counter() - start

    def kernel(self, batch: int, name: str, backward: bool) -> float:
        """One op of tools/kernel_cases.py: forward (no_grad), or forward and backward of its sum."""
        torch = self.torch
        if (batch, name) not in self.kernels:
            self.kernels[batch, name] = _kernel(torch, batch, name, self.spec)
        op, inputs = self.kernels[batch, name]
        if not backward:
            with torch.no_grad():
                start = time.perf_counter()
                op(*inputs)
                return time.perf_counter() - start
        leaves = [x.detach().requires_grad_(True) for x in inputs]
        start = time.perf_counter()
        op(*leaves).sum().backward()
        return time.perf_counter() - start

    def export(self, out: str) -> None:
        """Weights, numerics logits and torch.onnx export, before anything changes the weights."""
        torch = self.torch
        import numpy as np
        size = self.spec["image_size"]
        torch.save({"model": self.model.state_dict()}, os.path.join(out, FILES["weights"]))
        with torch.no_grad():
            inputs = torch.from_numpy(np.load(os.path.join(out, FILES["numerics_input"])))
            np.save(os.path.join(out, FILES["numerics_logits"]), self.summed(inputs).numpy())
        torch.onnx.export(self.summed, (torch.zeros(2, 3, size, size),), os.path.join(out, FILES["onnx"]),
                          dynamo=False, opset_version=ONNX_OPSET, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})


def _kernel(torch, batch: int, name: str, spec: dict) -> tuple:
    """(op, seeded inputs) of kernel case `name`; modules in train mode, as in a train step."""
    from tools.kernel_cases import kernel_cases
    cases = kernel_cases(spec["hparams"], spec["image_size"], batch)
    if name not in cases:
        raise WorkerError(f"no kernel case {name!r}; known: {', '.join(cases)}")
    case, nn = cases[name], torch.nn
    shape, kind = case["shape"], case["kind"]
    heads = case.get("heads", 1)
    ops = {"linear": lambda: nn.Linear(shape[-1], case["out"]),
           "layernorm": lambda: nn.LayerNorm(shape[-1], eps=1e-6),
           "gelu": nn.GELU,
           "softmax": lambda: lambda x: x.softmax(-1),
           "scores": lambda: lambda q, k: q @ k.transpose(-2, -1),
           "head_split": lambda: lambda x: x.reshape(shape[0], shape[1], 3 * heads, -1).permute(0, 2, 1, 3)
           .contiguous(),
           "conv3x3": lambda: nn.Conv2d(shape[1], shape[1], 3, padding=1, bias=False),
           "batchnorm": lambda: nn.BatchNorm2d(shape[1], eps=1e-6),
           "maxpool": lambda: nn.MaxPool2d(3, 2, padding=1)}
    op = ops[kind]()
    generator = torch.Generator().manual_seed(spec["seed"])
    inputs = [torch.randn(shape, generator=generator) for _ in range(2 if kind == "scores" else 1)]
    return op, inputs


def serve(spec: dict, commands, answers) -> None:
    """Export, say ready, then answer `commands` (lines) on `answers` until quit or their end."""
    official = Official(spec)
    official.export(spec["out_dir"])

    def say(message: dict) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()
    say({"ready": f"torch {official.torch.__version__}, {official.torch.get_num_threads()} threads"})
    for line in commands:
        cmd, batch, options = parse_command(line)
        if cmd == "quit":
            return
        say({"seconds": getattr(official, cmd)(batch, **options)})


def peak_memory(spec: dict) -> dict:
    import resource
    official = Official(spec)
    times = [official.train(spec["batch"]) for _ in range(1 + spec["steps"])]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mib = peak / 1024 if os.uname().sysname == "Linux" else peak / 2 ** 20  # kB on Linux, bytes on macOS
    return {"peak_mib": round(peak_mib, 1), "step_s": round(statistics.median(times[1:]), 2),
            "torch": official.torch.__version__, "threads": official.torch.get_num_threads()}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: {PROG} SPEC.json", file=sys.stderr)
        return 2
    # the protocol owns stdout: anything torch or the official code prints goes to stderr instead
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        spec = read_spec(argv[0])
        if spec["mode"] == "serve":
            serve(spec, sys.stdin, answers)
        else:
            answers.write(json.dumps(peak_memory(spec)) + "\n")
    except WorkerError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        answers.close()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # for src
    sys.exit(main())
