"""Learning-rate schedules as one array with an entry per optimizer step, a linear warm-up as its
prefix; the optimizer indexes it with its own step counter, so the schedule is fixed before training
and resumes with the optimizer state (formulas: docs/training.md "Learning-rate schedules")."""
import numpy as np


SCHEDULES = ("cosine_lr", "step_lr", "multistep_lr", "exp_lr", "constant_lr")


def _decay(cfg, epoch: np.ndarray, progress: np.ndarray) -> np.ndarray:
    """The schedule without warm-up at fractional epochs `epoch`; `progress` is the fraction
    of the post-warm-up steps already done (cosine's t; negative during warm-up)."""
    name = cfg.lr_scheduler
    if name == "cosine_lr":
        return cfg.min_lr + 0.5 * (cfg.base_lr - cfg.min_lr) * (1.0 + np.cos(np.pi * progress))
    if name == "step_lr":
        return cfg.base_lr * cfg.lr_gamma ** (epoch // cfg.lr_adjust)
    if name == "multistep_lr":
        return cfg.base_lr * cfg.lr_gamma ** (epoch / cfg.lr_adjust)
    if name == "exp_lr":
        return cfg.base_lr * cfg.lr_gamma ** epoch
    if name == "constant_lr":
        return np.full(epoch.shape, cfg.base_lr)
    raise ValueError(f"unknown lr_scheduler {name!r}; known: {', '.join(SCHEDULES)}")


def build_lr_schedule(cfg, steps_per_epoch: int) -> np.ndarray:
    """float32 array of cfg.epochs * steps_per_epoch learning rates, entry s used by update s.

    Reads cfg.lr_scheduler, base_lr, min_lr, warmup_lr, warmup_length, epochs,
    lr_adjust, lr_gamma.
    """
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    if cfg.warmup_length > cfg.epochs:
        raise ValueError(f"warmup_length ({cfg.warmup_length}) is longer than training ({cfg.epochs} epochs)")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = cfg.warmup_length * steps_per_epoch
    steps = np.arange(total_steps, dtype=np.float64)
    progress = (steps - warmup_steps) / max(total_steps - warmup_steps, 1)
    lr = _decay(cfg, steps / steps_per_epoch, progress)
    if warmup_steps:
        warm = steps < warmup_steps
        lr[warm] = cfg.warmup_lr + (cfg.base_lr - cfg.warmup_lr) * steps[warm] / warmup_steps
    return lr.astype(np.float32)
