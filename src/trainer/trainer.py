"""The training loop: setup from the config, epochs of train steps, validation, checkpoints, logs.
train.py only parses the config and calls `Trainer(cfg).fit()`.  Only rank 0
prints and writes; every rank trains and validates.
"""
import hashlib
import sys
import textwrap
import time

import numpy as np
import mindspore as ms

from src.checkpoint import CheckpointError, load_weights, read_checkpoint, weights_format
from src.checkpoint_settings import checkpoint_entry
from src.config import TRAIN, config_yaml, resolved_config
from src.conformer import canonical_arch, create_model_from_config, param_count_line
from src.data.batch_finish import NormalizedInput, batch_finish
from src.data.batch_workers import BatchWorkers
from src.data.imagenet import DecodedImages, SkippedImages, create_dataset, data_workers
from src.errors import ConformerError
from src.inference.amp import mixed_precision
from src.inference.evaluate import evaluate
from src.inference.heads import HEADS
from src.inference.metrics import format_eval_results
from src.runtime.device import init_context, init_distributed, set_graph_kernel_fusion
from src.trainer.checkpoint_keeper import CheckpointKeeper
from src.trainer.ema import EMA
from src.trainer.logs import LossLog, MetricsLog, ProgressLogger, input_grid, save_input_grid, waited
from src.trainer.loss import create_loss
from src.trainer.lr_schedule import build_lr_schedule
from src.trainer.optimizer import create_optimizer, current_lr
from src.trainer.recompute import recompute_blocks
from src.trainer.run_record import CONFIG_HEADER, record_yaml, write_run_record
from src.trainer.signals import Interrupted, StopRequest, SumOverRanks
from src.trainer.tensorboard import TensorBoardLog
from src.trainer.train_one_step import ACCUMULATED, GRAD_NORM, NetWithLoss, TrainOneStep

# Entries of a training checkpoint that describe the position, not parameters (the global step is
# the optimizer's own `global_step` parameter, which the LR schedule is indexed by). Positions count
# optimizer steps: with gradient accumulation a checkpoint is only written between optimizer steps, so
# a resume (with the same batch_size and grad_accumulation_steps) is exact.
POSITION_KEYS = ("epoch", "step_in_epoch")
# The schedule comes from the config of the resumed run (it may extend the epochs).
NOT_RESTORED = ("learning_rate",)
# --checkpoint auto: the newest intact checkpoint in ckpt_root_dir, or a fresh start
AUTO = "auto"


class TrainingError(ConformerError, RuntimeError):
    """A problem reported to the user in one line."""


class DivergedError(TrainingError):
    """max_nonfinite_steps consecutive steps with non-finite gradients."""


def build_train_step(cfg, net, steps_per_epoch: int, rank_size: int):
    """-> (train step, optimizer, EMA or None); `steps_per_epoch` counts optimizer steps."""
    lr_schedule = build_lr_schedule(cfg, steps_per_epoch)
    if cfg.recompute:
        recompute_blocks(net)
    optimizer = create_optimizer(cfg, net, lr_schedule)
    ema = EMA(net.get_parameters(), cfg.ema_decay) if cfg.with_ema else None
    step = TrainOneStep(NetWithLoss(net, create_loss(cfg)), optimizer, loss_scale=float(cfg.loss_scale),
                        dynamic_loss_scale=cfg.is_dynamic_loss_scale,
                        clip_grad_norm=cfg.clip_grad_norm if cfg.use_clip_grad_norm else 0.0,
                        ema=ema, device_num=rank_size, accumulation_steps=cfg.grad_accumulation_steps)
    step.set_train(True)
    return step, optimizer, ema


def training_state(train_step) -> list:
    """What a training checkpoint holds: every parameter of the train step but the (zero) gradient
    accumulation buffers."""
    return [{"name": p.name, "data": p} for p in train_step.get_parameters()
            if not p.name.startswith(ACCUMULATED + ".") and p.name != GRAD_NORM]


def restore(train_step, path: str, params: dict = None) -> dict:
    """Load a training checkpoint (`params`, read from `path` if None) into the train step; returns its
    position entries."""
    params = read_checkpoint(path) if params is None else params
    missing = [entry["name"] for entry in training_state(train_step)
               if entry["name"] not in params and entry["name"] not in NOT_RESTORED]
    if missing:
        raise CheckpointError(f"{path}: not a training checkpoint of this setup: {missing[0]!r} is missing "
                              "(another arch, optimizer or with_ema setting?)")
    if any(k not in params for k in POSITION_KEYS):
        raise CheckpointError(f"{path}: has no training position (epoch/step): resume needs a checkpoint "
                              "written by train.py; use --pretrained for weights only")
    state = {k: v for k, v in params.items()
             if k not in POSITION_KEYS and k not in NOT_RESTORED and not isinstance(v, str)}
    for p in train_step.get_parameters():
        if p.name in state and tuple(state[p.name].shape) != tuple(p.shape):
            raise CheckpointError(f"{path}: {p.name!r} has shape {tuple(state[p.name].shape)}, "
                                  f"the model needs {tuple(p.shape)}")
    ms.load_param_into_net(train_step, state)
    position = {k: int(params[k].asnumpy()) for k in POSITION_KEYS}
    position["global_step"] = int(params["global_step"].asnumpy().reshape(-1)[0])
    return position


def read_training_checkpoint(path: str) -> dict:
    """The entries of a checkpoint to resume from: only train.py's .ckpt carry the training state."""
    fmt = weights_format(path)
    if fmt != "ckpt":
        raise CheckpointError(f"{path}: resuming needs a training checkpoint (a .ckpt written by train.py: "
                              f"optimizer state, EMA, position); a {fmt} file holds weights only: use --pretrained")
    return read_checkpoint(path)


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



class Trainer:
    """Builds everything `cfg` describes, then `fit()` runs the remaining epochs."""

    def __init__(self, cfg):
        self.cfg = cfg
        init_context(cfg)
        set_graph_kernel_fusion(cfg.graph_kernel_fusion)
        self.rank_id, self.rank_size = init_distributed(cfg)
        self.is_main = self.rank_id == 0
        self.arch = canonical_arch(cfg.arch)
        self.keeper = CheckpointKeeper(cfg.ckpt_root_dir, cfg.best_ckpt_root_dir, f"{self.arch}_{cfg.model_postfix}",
                                       cfg.ckpt_keep_num, cfg.best_ckpt_num, enabled=self.is_main)
        if cfg.resume == AUTO:
            self.resume_from, self.resume_state = self._newest_intact_checkpoint()
        else:
            self.resume_from = cfg.resume or (cfg.pretrained if cfg.pretrained and not cfg.exclude_epoch_state
                                              else "")
            # read (and its CRC checked) before the data and the graph are built: a bad file fails at once
            self.resume_state = read_training_checkpoint(self.resume_from) if self.resume_from else None
        if self.keeper.has_checkpoints() and not self.resume_from:
            raise TrainingError(f"{cfg.ckpt_root_dir} or {cfg.best_ckpt_root_dir} already holds checkpoints named "
                                f"{self.arch}_{cfg.model_postfix}-*"
                                + (" but no intact training checkpoint to continue" if cfg.resume == AUTO else
                                   ": continue them with --resume CKPT or --checkpoint auto")
                                + ", or choose another ckpt_root_dir/best_ckpt_root_dir or model_postfix")
        self.net = self._build_net()
        # started once, they serve every epoch and validation; ended by fit() (or at exit)
        self.batch_workers = BatchWorkers(data_workers(cfg)) if cfg.data_workers_mode == "process" else None
        # every rank validates the whole set: identical metrics
        self.val_data = create_dataset(cfg, "val", batch_workers=self.batch_workers)
        self.keeper.meta.update(checkpoint_entry(cfg, self.val_data.class_names))
        self.skipped = SkippedImages()  # unreadable training images: warned once each, counted over the run
        self.decoded = DecodedImages(cfg.cache_decoded_mib) if cfg.cache_decoded_mib else None
        self.micro_batches = cfg.grad_accumulation_steps
        self.finish = batch_finish(cfg)  # uint8 batches normalised, erased and mixed in a graph
        self.data_times = []  # per optimizer step of the current epoch: seconds waited for its batches
        self.train_data = self._train_data(epoch=0, done=0)
        self.steps_per_epoch = self.train_data.get_dataset_size() // self.micro_batches  # optimizer steps
        if self.steps_per_epoch == 0:
            raise TrainingError(f"fewer training images than batch_size {cfg.batch_size} x grad_accumulation_steps "
                                f"{self.micro_batches} x {self.rank_size} device(s)")
        self.train_step, self.optimizer, self.ema = build_train_step(cfg, self.net, self.steps_per_epoch,
                                                                     self.rank_size)
        self.steps_compiled = False  # compiled ahead of this process's first step (TrainOneStep.compile_steps)
        self.eval_net = create_model_from_config(cfg)
        self.eval_forward = NormalizedInput(self.eval_net)  # the validation batches are uint8; built once: compiled once
        self.metrics_log = MetricsLog(cfg.summary_root_dir, enabled=self.is_main)
        self.loss_log = LossLog(cfg.summary_root_dir, cfg.summary_loss_collect_freq, enabled=self.is_main)
        self.global_batch = cfg.batch_size * self.micro_batches * self.rank_size
        self.progress = ProgressLogger(cfg.epochs, self.steps_per_epoch, self.global_batch,
                                       cfg.print_loss_every, enabled=self.is_main)
        self.tensorboard = None  # opened once the first step is known (a resumed run purges from there on)
        self.nonfinite, self.last_good = 0, ""  # the current run of steps with non-finite gradients
        if self.is_main:
            write_run_record(cfg, sys.argv, self.rank_size, self.resume_from)
            # indented, so no line of it reads as one of the run's own lines (e.g. `epochs:` beside `epoch 1`)
            self._print(CONFIG_HEADER + "\n" + textwrap.indent(config_yaml(cfg, TRAIN), "  ").rstrip())

    def _newest_intact_checkpoint(self) -> tuple:
        """--checkpoint auto: (path, its entries) of the newest readable checkpoint of this run in
        ckpt_root_dir, or ("", None).  Rank 0 chooses (a damaged file is reported and the one before it
        tried) and the others take its choice through a collective: every rank then reads the same file,
        whatever each node's view of the folder."""
        choice, params = (-1, 0), None
        if self.is_main:
            for epoch, global_step, path in self.keeper.newest_first():
                try:
                    params = read_training_checkpoint(path)
                except CheckpointError as e:
                    print(f"train.py: --checkpoint auto: {e}; trying the one before it", file=sys.stderr, flush=True)
                    continue
                choice = (epoch, global_step)
                break
        if self.rank_size > 1:
            # float32 sums (the CPU AllReduce's only type) are exact below 2**24: the step goes in two halves
            mine = np.array([choice[0] + 1, choice[1] // 4096, choice[1] % 4096] if self.is_main else [0, 0, 0],
                            np.float32)
            agreed = SumOverRanks()(ms.Tensor(mine)).asnumpy().astype(np.int64)
            choice = (int(agreed[0]) - 1, int(agreed[1]) * 4096 + int(agreed[2]))
            if not self.is_main:
                chosen = self.keeper.current_path(*choice) if choice[0] >= 0 else "a fresh start"
                print(f"rank {self.rank_id}/{self.rank_size}: --checkpoint auto: rank 0 chose {chosen}", flush=True)
        if choice[0] < 0:
            self._print(f"--checkpoint auto: no intact checkpoint of {self.keeper.prefix} in {self.cfg.ckpt_root_dir}: "
                        "starting fresh")
            return "", None
        path = self.keeper.current_path(*choice)
        return path, params if params is not None else read_training_checkpoint(path)

    def _print(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    def _build_net(self):
        cfg = self.cfg
        net = create_model_from_config(cfg)
        self._print(param_count_line(net, self.arch))
        if cfg.pretrained and not self.resume_from:
            if load_weights(net, cfg.pretrained, skip_mismatched_head=True):
                self._print(f"pretrained {cfg.pretrained}: heads re-initialised for {cfg.num_classes} classes")
        if self.rank_size > 1:  # identical on every rank, or the seeding failed
            print(f"rank {self.rank_id}/{self.rank_size}: initial weights fingerprint {weights_fingerprint(net)}",
                  flush=True)
        return mixed_precision(net, cfg.amp_level)

    def _train_data(self, epoch: int, done: int):
        """The batches of `epoch` after its first `done` optimizer steps, cut to whole optimizer steps
        (the last batch_count % grad_accumulation_steps batches of an epoch are left out)."""
        data = create_dataset(self.cfg, "train", rank_id=self.rank_id, rank_size=self.rank_size, epoch=epoch,
                              skip_batches=done * self.micro_batches, skipped=self.skipped, decoded=self.decoded,
                              batch_workers=self.batch_workers, raw=True)
        whole = data.get_dataset_size() // self.micro_batches * self.micro_batches
        if whole < data.get_dataset_size():
            data = data.take(whole)
            data.dataset_size = whole  # exact, as create_dataset's for train
        return data

    def _start(self) -> tuple:
        """(first epoch, optimizer steps of it already done): from the resumed checkpoint, else the config."""
        if not self.resume_from:
            return self.cfg.start_epoch, 0
        position = restore(self.train_step, self.resume_from, self.resume_state)
        self.resume_state = None
        epoch, done = position["epoch"], position["step_in_epoch"]
        if done >= self.steps_per_epoch:
            epoch, done = epoch + 1, 0
        self._print(f"resumed from {self.resume_from}: epoch {epoch + 1}, step {done + 1} "
                    f"(global step {position['global_step']})")
        return epoch, done

    def _global_step(self) -> int:
        return int(self.optimizer.global_step.asnumpy()[0])

    def fit(self) -> None:
        """Train the remaining epochs.  SIGTERM/SIGINT stop it after the step in flight with a
        checkpoint of that position (raises Interrupted); a second signal ends the process at once."""
        self.stop = StopRequest(rank_size=self.rank_size, announce=self.is_main).install()
        try:
            self._fit()
        finally:
            self.stop.uninstall()
            if self.tensorboard is not None:
                self.tensorboard.close()
            if self.batch_workers is not None:
                self.batch_workers.close()

    def _fit(self) -> None:
        start_epoch, done = self._start()
        self._open_tensorboard()
        self.last_save = time.time()
        for epoch in range(start_epoch, self.cfg.epochs):
            started = time.perf_counter()
            if epoch != 0 or done:
                self.train_data = self._train_data(epoch, done)
            losses = self._train_epoch(epoch, done)
            trained = (self.steps_per_epoch - done) * self.global_batch / max(time.perf_counter() - started, 1e-9)
            done = 0
            self.keeper.save_current(training_state(self.train_step), epoch, self.steps_per_epoch,
                                     self._global_step(), {"seed": self.cfg.seed})
            self.last_save = time.time()
            self._validate(epoch, losses, trained, started)
            signum = self.stop.agreed()
            if signum:  # arrived during the epoch-end checkpoint or validation: that checkpoint is the position
                raise Interrupted(signum, self.keeper.last_complete(),
                                  self._position(epoch, self.steps_per_epoch))
            self.progress.restart()  # img/s and ETA time training steps, not the checkpoint or validation
        print(f"rank {self.rank_id}/{self.rank_size}: weights fingerprint {weights_fingerprint(self.net)}",
              flush=True)

    def _open_tensorboard(self) -> None:
        """Event files from the first step this process trains (earlier ones' points from there on are
        dropped); a fresh run also records its hyper-parameters."""
        first = self._global_step() + 1 if self.resume_from else 0
        self.tensorboard = TensorBoardLog(self.cfg.summary_root_dir, self.cfg.summary_loss_collect_freq, first,
                                          enabled=self.is_main and self.cfg.tensorboard)
        if not self.resume_from:
            self.tensorboard.hyper_parameters(resolved_config(self.cfg, TRAIN), record_yaml(self.cfg, sys.argv))

    def _count_nonfinite(self, applied: bool, epoch: int, step: int) -> None:
        """Stop after max_nonfinite_steps steps in a row with non-finite gradients (the same on every
        rank: the check is on the reduced gradients)."""
        if applied:
            self.nonfinite = 0
            return
        if self.nonfinite == 0:
            self.last_good = self.keeper.last_complete()
        self.nonfinite += 1
        limit = self.cfg.max_nonfinite_steps
        if limit and self.nonfinite >= limit:
            self.loss_log.flush()  # the losses recorded so far: they show the divergence
            where = f"the last good checkpoint is {self.last_good}" if self.last_good else "no checkpoint was written"
            raise DivergedError(f"training diverged: {self.nonfinite} steps in a row had non-finite gradients, up to "
                                f"{self._position(epoch, step)}; {where} (max_nonfinite_steps {limit})")

    def _train_epoch(self, epoch: int, done: int) -> list:
        """Train the rest of `epoch` after its first `done` optimizer steps; returns the applied steps'
        losses (with gradient accumulation, each the mean of its micro-batches' losses)."""
        cfg, losses, step, micro_losses = self.cfg, [], done, []
        self.data_times, data_time = [], 0.0
        batches = self.skipped.one_line_errors(self.train_data.create_tuple_iterator(num_epochs=1))
        for (pixels, targets, weights, boxes), wait in waited(batches):
            data_time += wait
            images = self.finish(pixels, weights, boxes)
            if cfg.collect_input_data and self.is_main and step == done and not micro_losses:
                grid = input_grid(images.asnumpy())
                save_input_grid(grid, cfg.summary_root_dir, epoch)
                self.tensorboard.input_grid(grid, self._global_step() + 1)
            if not self.steps_compiled:
                self.train_step.compile_steps(images, targets)
                self.steps_compiled = True
            if len(micro_losses) < self.micro_batches - 1:
                micro_losses.append(self.train_step.accumulate(images, targets))
                continue
            loss, applied, _ = self.train_step(images, targets)
            step += 1
            loss = float(sum(float(m.asnumpy()) for m in micro_losses) + loss.asnumpy()) / self.micro_batches
            micro_losses = []
            self.data_times.append(data_time)
            if bool(applied.asnumpy()):
                losses.append(loss)
            global_step = self._global_step()
            lr = current_lr(self.optimizer)
            skipped = int(self.train_step.skipped_steps.asnumpy())
            self.progress.step(epoch, step, loss, lr, skipped, data_time)
            data_time = 0.0
            self.loss_log.record(global_step, epoch, loss, lr)
            self.tensorboard.step(global_step, loss, lr, float(self.train_step.scale_sense.asnumpy()), skipped,
                                  float(self.train_step.grad_norm.asnumpy()))
            self._count_nonfinite(bool(applied.asnumpy()), epoch, step)
            due_steps = cfg.ckpt_save_every_step and global_step % cfg.ckpt_save_every_step == 0
            due_time = cfg.ckpt_save_every_seconds and time.time() - self.last_save >= cfg.ckpt_save_every_seconds
            # the epoch end saves anyway; none inside a run of non-finite steps, which could prune the good ones
            saved = bool(due_steps or due_time) and step < self.steps_per_epoch and not self.nonfinite
            if saved:
                self.keeper.save_current(training_state(self.train_step), epoch, step, global_step,
                                         {"seed": cfg.seed})
                self.last_save = time.time()
            signum = self.stop.agreed()
            if signum:
                self._stop_here(signum, epoch, step, global_step, saved=saved)
        if micro_losses:  # a guard: the pipeline is cut to whole optimizer steps, so none is left open
            self.train_step.discard_accumulated()
        return losses

    def _position(self, epoch: int, step: int) -> str:
        return f"epoch {epoch + 1} step {step}/{self.steps_per_epoch} (global step {self._global_step()})"

    def _stop_here(self, signum: int, epoch: int, step: int, global_step: int, saved: bool) -> None:
        """Checkpoint the position after `step` (as the periodic saves do: resume continues at the
        next step) and raise Interrupted.  A stop after an epoch's last step resumes at the next
        epoch; that epoch's validation is not run."""
        if saved and step < self.steps_per_epoch:
            path = self.keeper.last_complete()  # this very position was just written
        else:
            path = self.keeper.save_current(training_state(self.train_step), epoch, step, global_step,
                                            {"seed": self.cfg.seed})
        self.loss_log.flush()  # the steps since the last epoch end are in the checkpoint: their losses too
        self.stop.barrier()
        raise Interrupted(signum, path, self._position(epoch, step))

    def _validate(self, epoch: int, losses: list, images_per_second: float, started: float) -> None:
        """Evaluate the EMA (or raw) weights; log them, keep them if among the best.  `images_per_second`:
        the epoch's training speed; `started`: its perf_counter start."""
        weights = validation_weights(self.net, self.ema)
        ms.load_param_into_net(self.eval_net, {w["name"]: ms.Parameter(w["data"], name=w["name"]) for w in weights})
        results = evaluate(self.eval_forward, self.val_data)
        if not self.is_main:
            return
        label = "EMA " if self.ema is not None else ""
        for head in HEADS:
            print(f"epoch {epoch + 1} {label}{head}: {format_eval_results(results[head])}", flush=True)
        self.keeper.offer_best(weights, results["summed"]["Top1-Acc"], epoch)
        row = {"epoch": epoch + 1, "global_step": self._global_step(),
               "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "lr": current_lr(self.optimizer), "val_loss": results["summed"]["Loss"],
               "skipped_steps": int(self.train_step.skipped_steps.asnumpy()), "skipped_images": self.skipped.count}
        for head in HEADS:
            row[f"{head}_top1"] = results[head]["Top1-Acc"]
            row[f"{head}_top5"] = results[head]["Top5-Acc"]
        # the mean seconds an optimizer step of this epoch (of this process, when resumed) waited for data
        row["data_time"] = float(np.mean(self.data_times)) if self.data_times else float("nan")
        self.loss_log.flush()
        self.metrics_log.append(row, self.loss_log.points())
        self.tensorboard.epoch(row["global_step"], results, row["train_loss"], images_per_second,
                               time.perf_counter() - started)
