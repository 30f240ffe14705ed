"""Train Conformer: config -> data -> model -> train step -> epochs with validation and checkpoints.

    python train.py --config src/configs/conformer_tiny.yaml --data_url /data/imagenet/ [--checkpoint CKPT]

Multi-device runs are started by scripts/run_distribute_train_gpu.sh (msrun).
"""
import shlex
import sys

from src.trainer.allocator import limit_malloc_arenas

limit_malloc_arenas()  # first: glibc fixes its arena limit when the first thread needs an arena

# MindSpore-free: the config is parsed before MindSpore is imported (main)
from src.config import VOCABULARY, parse_args  # noqa: E402  (after the allocator setting)
from src.runtime.console import run_main  # noqa: E402
from src.runtime.openmp import limit_openmp_threads  # noqa: E402


def _script_args(parser):
    parser.add_argument("--checkpoint", "--resume", dest="resume", default="",
                        help=f"{VOCABULARY['--checkpoint']}: training continues from this training checkpoint "
                             "(weights, optimizer, EMA, loss scale, position); 'auto' = the newest intact one in "
                             "ckpt_root_dir, or a fresh start when there is none (re-run the same command after a "
                             "preemption)")


def resume_command(argv: list, checkpoint: str) -> str:
    """This run's command line, continuing from `checkpoint` instead of any --resume/--checkpoint."""
    args, rest = [], list(argv[1:])
    while rest:
        arg = rest.pop(0)
        if arg in ("--resume", "--checkpoint"):
            rest = rest[1:]
        elif not arg.startswith(("--resume=", "--checkpoint=")):
            args.append(arg)
    return shlex.join(["python", argv[0], *args, "--checkpoint", checkpoint])


def main() -> int:
    cfg = parse_args(script="train.py", description=__doc__.splitlines()[0], add_script_args=_script_args)
    if cfg.graph_kernel_fusion:
        limit_openmp_threads()  # before MindSpore loads libgomp, which reads OMP_NUM_THREADS then
    from src.trainer.signals import Interrupted  # MindSpore: imported after that setting
    from src.trainer.trainer import AUTO, Trainer
    trainer = None
    try:
        trainer = Trainer(cfg)
        trainer.fit()
    except Interrupted as stop:
        if trainer.is_main:
            resume = AUTO if cfg.resume == AUTO else stop.path  # `auto`: the same command line resumes
            print(f"train.py: {stop}; checkpoint {stop.path}; resume with: {resume_command(sys.argv, resume)}",
                  file=sys.stderr, flush=True)
        else:
            print(f"rank {trainer.rank_id}/{trainer.rank_size}: {stop}", file=sys.stderr, flush=True)
        return stop.status
    except KeyboardInterrupt:  # Ctrl-C before training started: nothing to save yet
        print("train.py: interrupted before the first step; nothing to save", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main, "train.py"))
