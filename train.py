"""Train Conformer: config -> data -> model -> train step -> epochs with validation and checkpoints.

    python train.py --config src/configs/conformer_tiny.yaml --data_url /data/imagenet/ [--resume CKPT]

Multi-device runs are started by scripts/run_distribute_train_gpu.sh (msrun).
"""
import hashlib
import sys
import time

import numpy as np
import mindspore as ms

from src.config import parse_args
from src.conformer import OFFICIAL_PARAM_COUNTS, canonical_arch, count_params, create_model_from_config
from src.data.imagenet import DatasetError, SkippedImages, create_dataset
from src.tools.callback import CheckpointKeeper, LossLog, MetricsLog, ProgressLogger, save_input_grid
from src.tools.checkpoint import CheckpointError, load_weights, read_checkpoint
from src.tools.criterion import create_loss
from src.tools.device import DeviceError, init_context, init_distributed
from src.tools.metrics import evaluate, format_eval_results
from src.tools.optimizer import create_optimizer, current_lr
from src.tools.schedulers import build_lr_schedule
from src.trainer.ema import EMA
from src.trainer.train_one_step import NetWithLoss, TrainOneStep

# Entries of a training checkpoint that describe the position, not parameters (the global step is
# the optimizer's own `global_step` parameter, which the LR schedule is indexed by).
POSITION_KEYS = ("epoch", "step_in_epoch")
# The schedule comes from the config of the resumed run (it may extend the epochs).
NOT_RESTORED = ("learning_rate",)


def _script_args(parser):
    parser.add_argument("--resume", "--checkpoint", dest="resume", default="",
                        help="continue training from this training checkpoint (weights, optimizer, EMA, "
                             "loss scale, position)")


class TrainingError(RuntimeError):
    """A problem reported to the user in one line."""


def build_train_step(cfg, net, steps_per_epoch: int, rank_size: int):
    lr_schedule = build_lr_schedule(cfg, steps_per_epoch)
    optimizer = create_optimizer(cfg, net, lr_schedule)
    ema = EMA(net.get_parameters(), cfg.ema_decay) if cfg.with_ema else None
    step = TrainOneStep(NetWithLoss(net, create_loss(cfg)), optimizer, loss_scale=float(cfg.loss_scale),
                        dynamic_loss_scale=cfg.is_dynamic_loss_scale,
                        clip_grad_norm=cfg.clip_grad_norm if cfg.use_clip_grad_norm else 0.0,
                        ema=ema, device_num=rank_size)
    step.set_train(True)
    return step, optimizer, ema


def restore(train_step, path: str) -> dict:
    """Load a training checkpoint into the train step; returns its position entries."""
    params = read_checkpoint(path)
    missing = [p.name for p in train_step.get_parameters() if p.name not in params and p.name not in NOT_RESTORED]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this setup: {missing[0]!r} is missing "
                              "(another arch, optimizer or with_ema setting?)")
    if any(k not in params for k in POSITION_KEYS):
        raise CheckpointError(f"{path}: has no training position (epoch/step): resume needs a checkpoint "
                              "written by train.py; use --pretrained for weights only")
    state = {k: v for k, v in params.items() if k not in POSITION_KEYS and k not in NOT_RESTORED}
    for p in train_step.get_parameters():
        if p.name in state and tuple(state[p.name].shape) != tuple(p.shape):
            raise CheckpointError(f"{path}: {p.name!r} has shape {tuple(state[p.name].shape)}, "
                                  f"the model needs {tuple(p.shape)}")
    ms.load_param_into_net(train_step, state)
    position = {k: int(params[k].asnumpy()) for k in POSITION_KEYS}
    position["global_step"] = int(params["global_step"].asnumpy().reshape(-1)[0])
    return position


def validation_weights(net, ema) -> list:
    """What is evaluated and kept as best: the EMA weights when EMA is on, else the raw ones."""
    values = ema.state() if ema is not None else {p.name: p.asnumpy() for p in net.get_parameters()}
    return [{"name": name, "data": ms.Tensor(value)} for name, value in values.items()]


def weights_fingerprint(net) -> str:
    """A hash of the trainable parameters' bytes: equal on all ranks when data parallelism kept them
    in sync (BatchNorm running statistics are per rank, as with torch DDP without SyncBN)."""
    digest = hashlib.sha1()
    for p in net.trainable_params():
        digest.update(p.asnumpy().tobytes())
    return digest.hexdigest()[:16]


def main() -> int:
    cfg = parse_args(description=__doc__.splitlines()[0], add_script_args=_script_args)
    try:
        return train(cfg)
    except (DeviceError, DatasetError, CheckpointError, TrainingError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2


def train(cfg) -> int:
    init_context(cfg)
    rank_id, rank_size = init_distributed(cfg)
    is_main = rank_id == 0
    arch = canonical_arch(cfg.arch)
    net = create_model_from_config(cfg)
    if is_main:
        official = OFFICIAL_PARAM_COUNTS.get(arch)
        print(f"arch {arch}: {count_params(net):,} parameters"
              + (f" (official: {official:,} at 1000 classes)" if official else ""), flush=True)
    resume_from = cfg.resume or (cfg.pretrained if cfg.pretrained and not cfg.exclude_epoch_state else "")
    keeper = CheckpointKeeper(cfg.ckpt_root_dir, cfg.best_ckpt_root_dir, f"{arch}_{cfg.model_postfix}",
                              cfg.ckpt_keep_num, cfg.best_ckpt_num, enabled=is_main)
    if keeper.has_checkpoints() and not resume_from:
        raise TrainingError(f"{cfg.ckpt_root_dir} or {cfg.best_ckpt_root_dir} already holds checkpoints named "
                            f"{arch}_{cfg.model_postfix}-*: continue them with --resume CKPT, or choose another "
                            "ckpt_root_dir/best_ckpt_root_dir or model_postfix")
    if cfg.pretrained and not resume_from:
        fresh = load_weights(net, cfg.pretrained, skip_mismatched_head=True)
        if fresh and is_main:
            print(f"pretrained {cfg.pretrained}: heads re-initialised for {cfg.num_classes} classes", flush=True)
    if rank_size > 1:  # identical on every rank, or the seeding failed
        print(f"rank {rank_id}/{rank_size}: initial weights fingerprint {weights_fingerprint(net)}", flush=True)
    if cfg.amp_level != "O0":
        net = ms.amp.auto_mixed_precision(net, cfg.amp_level)

    val_data = create_dataset(cfg, "val")  # every rank validates the whole set: identical metrics
    skipped = SkippedImages()  # unreadable training images: warned once each, counted over the run
    train_data = create_dataset(cfg, "train", rank_id=rank_id, rank_size=rank_size, epoch=0, skipped=skipped)
    steps_per_epoch = train_data.get_dataset_size()
    if steps_per_epoch == 0:
        raise TrainingError(f"fewer training images than batch_size {cfg.batch_size} x {rank_size} device(s)")
    train_step, optimizer, ema = build_train_step(cfg, net, steps_per_epoch, rank_size)
    eval_net = create_model_from_config(cfg)

    start_epoch, skip_steps = cfg.start_epoch, 0
    if resume_from:
        position = restore(train_step, resume_from)
        start_epoch, skip_steps = position["epoch"], position["step_in_epoch"]
        if skip_steps >= steps_per_epoch:
            start_epoch, skip_steps = start_epoch + 1, 0
        if is_main:
            print(f"resumed from {resume_from}: epoch {start_epoch + 1}, step {skip_steps + 1} "
                  f"(global step {position['global_step']})", flush=True)

    metrics_log = MetricsLog(cfg.summary_root_dir, enabled=is_main)
    loss_log = LossLog(cfg.summary_root_dir, cfg.summary_loss_collect_freq, enabled=is_main)
    progress = ProgressLogger(cfg.epochs, steps_per_epoch, cfg.batch_size * rank_size, cfg.print_loss_every,
                              enabled=is_main)
    last_save = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        if epoch != 0 or skip_steps:
            train_data = create_dataset(cfg, "train", rank_id=rank_id, rank_size=rank_size, epoch=epoch,
                                        skip_batches=skip_steps, skipped=skipped)
        losses = []
        step = skip_steps
        for images, targets in train_data.create_tuple_iterator(num_epochs=1):
            if cfg.collect_input_data and is_main and step == skip_steps:
                save_input_grid(images.asnumpy(), cfg.summary_root_dir, epoch)
            loss, applied, _ = train_step(images, targets)
            step += 1
            loss = float(loss.asnumpy())
            if bool(applied.asnumpy()):
                losses.append(loss)
            global_step = int(optimizer.global_step.asnumpy()[0])
            progress.step(epoch, step, loss, current_lr(optimizer), int(train_step.skipped_steps.asnumpy()))
            loss_log.record(global_step, epoch, loss)
            due_steps = cfg.ckpt_save_every_step and global_step % cfg.ckpt_save_every_step == 0
            due_time = cfg.ckpt_save_every_seconds and time.time() - last_save >= cfg.ckpt_save_every_seconds
            if (due_steps or due_time) and step < steps_per_epoch:
                keeper.save_current(train_step, epoch, step, global_step, {"seed": cfg.seed})
                last_save = time.time()
        skip_steps = 0
        global_step = int(optimizer.global_step.asnumpy()[0])
        keeper.save_current(train_step, epoch, steps_per_epoch, global_step, {"seed": cfg.seed})
        last_save = time.time()

        weights = validation_weights(net, ema)
        ms.load_param_into_net(eval_net, {w["name"]: ms.Parameter(w["data"], name=w["name"]) for w in weights})
        results = evaluate(eval_net, val_data)
        if is_main:
            label = "EMA " if ema is not None else ""
            for head in ("sum", "conv", "trans"):
                print(f"epoch {epoch + 1} {label}{head}: {format_eval_results(results[head])}", flush=True)
            keeper.offer_best(weights, results["sum"]["Top1-Acc"], epoch)
            row = {"epoch": epoch + 1, "global_step": global_step,
                   "train_loss": float(np.mean(losses)) if losses else float("nan"),
                   "lr": current_lr(optimizer), "val_loss": results["sum"]["Loss"],
                   "skipped_steps": int(train_step.skipped_steps.asnumpy()), "skipped_images": skipped.count}
            for head in ("sum", "conv", "trans"):
                row[f"{head}_top1"] = results[head]["Top1-Acc"]
                row[f"{head}_top5"] = results[head]["Top5-Acc"]
            metrics_log.append(row)
            loss_log.flush()
    print(f"rank {rank_id}/{rank_size}: weights fingerprint {weights_fingerprint(net)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
