"""The MindSpore side of --torch_ref (tools/bench.py, tools/memory.py): checks, the official
constructor arguments, and the PyTorch worker process (tools/bench_torch_worker.py) run under
--torch_python.  Nothing here imports torch."""
import json
import os
import subprocess
import tempfile

from tools.bench_torch_worker import write_spec
from src.errors import ConformerError
from src.runtime.openmp import environment_for_others
from src.variants import variant_hparams

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_torch_worker.py")
QUIT_SECONDS = 30  # a worker that does not leave after quit is killed


class TorchRefError(ConformerError, RuntimeError):
    """A problem with the PyTorch side, reported as one line."""


def check_torch_ref(torch_ref: str, torch_python: str) -> None:
    """Fail in one line, before anything is measured, when --torch_ref cannot work."""
    if not os.path.isfile(os.path.join(torch_ref, "conformer.py")):
        raise TorchRefError(f"--torch_ref {torch_ref}: no conformer.py there, not a checkout of "
                            "pengzhiliang/Conformer")
    try:
        probe = subprocess.run([torch_python, "-c", "import torch"], capture_output=True, text=True)
    except OSError as e:
        raise TorchRefError(f"--torch_python {torch_python}: cannot run it ({e.strerror})") from None
    if probe.returncode != 0:
        raise TorchRefError(f"--torch_python {torch_python} cannot import torch; pass an interpreter "
                            "that has it")


def official_hparams(cfg, arch: str) -> dict:
    """Constructor arguments of the official Conformer for variant `arch` (models.py's values;
    the reduced variant's depth 3 comes from its registry row)."""
    return {**variant_hparams(arch), "num_classes": cfg.num_classes, "drop_rate": cfg.drop,
            "attn_drop_rate": cfg.drop_block, "drop_path_rate": cfg.drop_path}


def official_spec(cfg, arch: str, mode: str, **mode_keys) -> dict:
    """The worker's spec: cfg's model, image size and optimizer settings."""
    return dict(mode=mode, official=os.path.abspath(cfg.torch_ref), hparams=official_hparams(cfg, arch),
                image_size=cfg.image_size, lr=cfg.base_lr, betas=list(cfg.beta), eps=cfg.eps,
                weight_decay=cfg.weight_decay, seed=cfg.seed, **mode_keys)


def _last_line(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().strip().splitlines()
    return lines[-1] if lines else "no message"


def _start(python: str, spec_path: str, stdin, stdout, stderr):
    # not an OMP_NUM_THREADS=1 set for MindSpore's fused kernels (src/runtime/openmp.py), which torch would obey
    return subprocess.Popen([python, WORKER, spec_path], stdin=stdin, stdout=stdout, stderr=stderr, text=True,
                            env=environment_for_others())


class TorchWorker:
    """A live worker in mode serve: `seconds("forward" | "train", batch)` is one call of the official
    model (`seconds("kernel", batch, name=..., backward=...)` one op), timed in the worker, so ours
    and theirs can alternate call by call."""

    def __init__(self, cfg, arch: str, workdir: str):
        spec_path = os.path.join(workdir, "spec.json")
        write_spec(spec_path, **official_spec(cfg, arch, "serve", out_dir=workdir))
        self.stderr_path = os.path.join(workdir, "worker.stderr")
        with open(self.stderr_path, "w") as stderr:  # a file, not a pipe nobody reads, which could fill and block
            self.process = _start(cfg.torch_python, spec_path, subprocess.PIPE, subprocess.PIPE, stderr)
        try:
            self.note = self._receive("ready", "its start")
        except TorchRefError:
            self.close()
            raise

    def _died(self, when: str) -> TorchRefError:
        try:
            status = self.process.wait(timeout=QUIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        return TorchRefError(f"the PyTorch worker exited (status {status}) {when}: {_last_line(self.stderr_path)}")

    def _receive(self, key: str, when: str):
        line = self.process.stdout.readline()
        if not line:
            raise self._died(f"before answering {when}")
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or key not in answer:
            raise TorchRefError(f"the PyTorch worker answered {line.strip()[:200]!r} to {when}, "
                                f"not a JSON object with {key!r}")
        return answer[key]

    def _send(self, command: dict, when: str) -> None:
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died(f"before {when}") from None

    def seconds(self, cmd: str, batch: int, **options) -> float:
        when = " ".join(str(v) for v in (cmd, batch, *options.values()))
        self._send({"cmd": cmd, "batch": batch, **options}, when)
        seconds = self._receive("seconds", when)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
            raise TorchRefError(f"the PyTorch worker answered {seconds!r} seconds to {when}")
        return float(seconds)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.process.wait(timeout=QUIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def torch_peak_memory(cfg, arch: str, batch: int, steps: int) -> dict:
    """The worker's memory mode, in a fresh process: peak resident MiB of its train steps."""
    with tempfile.TemporaryDirectory() as workdir:
        spec_path = os.path.join(workdir, "spec.json")
        write_spec(spec_path, **official_spec(cfg, arch, "memory", batch=batch, steps=steps))
        stderr_path = os.path.join(workdir, "worker.stderr")
        with open(stderr_path, "w") as stderr:
            process = _start(cfg.torch_python, spec_path, subprocess.DEVNULL, subprocess.PIPE, stderr)
            out, _ = process.communicate()
        if process.returncode:
            raise TorchRefError(f"the PyTorch worker exited (status {process.returncode}): {_last_line(stderr_path)}")
    try:
        result = json.loads(out.strip().splitlines()[-1])
        float(result["peak_mib"])
    except (ValueError, IndexError, KeyError, TypeError):
        raise TorchRefError(f"the PyTorch worker printed {out.strip()[-200:]!r}, not its peak memory") from None
    return result
