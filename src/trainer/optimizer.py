"""Optimizers of the recipe: AdamW with torch semantics, plus momentum and SGD.

Every optimizer takes the whole per-step learning-rate array (lr_schedule.py)
and reads entry `global_step` of it at each update, so the schedule lives in
the graph and needs no host-side callback.  Parameters are split in two groups
by the timm rule: no weight decay on 1-D parameters (biases, LayerNorm and
BatchNorm gamma/beta), on `*.bias`, and on `cls_token`.

Why our own AdamW instead of a MindSpore one (MindSpore 2.10):
- `nn.AdamWeightDecay` has no bias correction, so its first steps are ~3x
  (0.1 / sqrt(0.001)) larger than torch/timm AdamW: training would not match the recipe.
- `mindspore.experimental.optim.AdamW` matches torch, but it takes its lr from
  a per-group Parameter that the train step has to assign from the schedule,
  and it always allocates an AMSGrad buffer (one more copy of all weights).
`AdamW` below is a short `nn.Optimizer` subclass (as mindcv does) around MindSpore's
fused AdamWeightDecay kernel, with the bias correction folded into its inputs: it takes
the lr array natively, keeps its state (`adam_m.*`, `adam_v.*`, `global_step`)
as Parameters that `ms.save_checkpoint` writes and `ms.load_param_into_net`
restores, and matches `torch.optim.AdamW` to float32 rounding
(tests/trainer/test_optim.py).  The checkpoint also holds the schedule itself as
`learning_rate`; leave it out when loading to resume under a changed schedule.
"""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

# Parameters the official model exempts from decay (Conformer.no_weight_decay), matched on the
# last name component because wrapping cells prefix names ("network.cls_token").
NO_WEIGHT_DECAY = {"cls_token"}


def _decays(param) -> bool:
    """timm's rule: decay only weights with ndim > 1 that are not named as exempt."""
    leaf = param.name.rsplit(".", 1)[-1]
    return len(param.shape) > 1 and not param.name.endswith(".bias") and leaf not in NO_WEIGHT_DECAY


def param_groups(params_or_net, weight_decay: float) -> list:
    """[decay group, no-decay group, order_params] for `nn.Optimizer`; only trainable parameters.

    `order_params` keeps the network's parameter order, so `optimizer.parameters`
    (the order gradients must come in) equals `net.trainable_params()`.
    """
    params = (params_or_net.trainable_params() if isinstance(params_or_net, nn.Cell)
              else [p for p in params_or_net if p.requires_grad])
    decay = [p for p in params if _decays(p)]
    no_decay = [p for p in params if not _decays(p)]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"order_params": params}]


_adamw_update = ops.MultitypeFuncGraph("adamw_update")


@_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_update_one(fused, beta1, beta2, eps_hat, lr_hat, decay_per_lr, weight_decay, param, m, v, grad):
    """torch.optim.AdamW on one tensor, as one fused AdamWeightDecay kernel (see AdamW.construct)."""
    return fused(param, m, v, lr_hat, beta1, beta2, eps_hat, weight_decay * decay_per_lr,
                 ops.cast(grad, param.dtype))


class AdamW(nn.Optimizer):
    """torch.optim.AdamW (amsgrad=False) with an lr array indexed by `global_step`.

    `params` may be `param_groups(...)` output (per-group weight decay) or a list of
    Parameters (then `weight_decay` applies to all of them).

    Each tensor is updated by MindSpore's fused `AdamWeightDecay` kernel (one kernel per tensor
    instead of a dozen elementwise ones: with ~100-700 tensors the update's kernel count, not its
    arithmetic, is its cost).  That kernel has no bias correction; torch's step
        p <- p * (1 - lr*wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    equals its  p <- p - lr_hat * (m / (sqrt(v) + eps_hat) + decay * p)  with
        lr_hat = lr * sqrt(bc2) / bc1,  eps_hat = eps * sqrt(bc2),  decay = wd * lr / lr_hat,
    so the three are computed per step and passed in (the kernel takes them as tensors).
    """

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.beta1 = ms.Tensor(beta1, ms.float32)
        self.beta2 = ms.Tensor(beta2, ms.float32)
        self.eps = ms.Tensor(eps, ms.float32)
        self.moments1 = self._parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="adam_v", init="zeros")
        self.fused = ops.AdamWeightDecay()

    def construct(self, gradients):
        lr = self.get_lr()  # entry `global_step` of the schedule, read before the increment
        weight_decay = self.get_weight_decay()
        step = ops.cast(self.global_step, ms.float32).reshape(()) + 1.0
        bias_correction1 = 1.0 - ops.pow(self.beta1, step)
        bias_correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, step))
        lr_hat = lr * bias_correction2_sqrt / bias_correction1
        decay_per_lr = bias_correction1 / bias_correction2_sqrt  # wd * lr / lr_hat = wd * this
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        update = ops.partial(_adamw_update, self.fused, self.beta1, self.beta2, self.eps * bias_correction2_sqrt,
                             lr_hat, decay_per_lr)
        if self.is_group:
            return self.hyper_map(update, weight_decay, self._parameters, self.moments1, self.moments2,
                                  gradients)
        return self.hyper_map(ops.partial(update, weight_decay), self._parameters, self.moments1,
                              self.moments2, gradients)


def create_optimizer(cfg, params_or_net, lr_schedule) -> nn.Optimizer:
    """The optimizer `cfg.optimizer` names, over the trainable parameters of a net or a list.

    - adamw: `AdamW` above (torch semantics), betas `cfg.beta`, `cfg.eps`.
    - momentum: SGD with heavy-ball momentum `cfg.momentum` (timm `--opt momentum`).
    - sgd: SGD with Nesterov momentum `cfg.momentum` (timm `--opt sgd`).
    The SGD variants add weight decay to the gradient (L2), as torch's SGD does;
    AdamW decays the weights directly.  `lr_schedule` needs an entry for every update:
    an update past its end fails (Gather index out of range on CPU).
    """
    groups = param_groups(params_or_net, cfg.weight_decay)
    lr = ms.Tensor(np.asarray(lr_schedule, np.float32))
    if cfg.optimizer == "adamw":
        beta1, beta2 = cfg.beta
        return AdamW(groups, lr, beta1=beta1, beta2=beta2, eps=cfg.eps)
    if cfg.optimizer == "momentum":
        return nn.Momentum(groups, lr, momentum=cfg.momentum)
    if cfg.optimizer == "sgd":
        return nn.SGD(groups, lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: adamw, momentum, sgd")


def current_lr(optimizer: nn.Optimizer) -> float:
    """The lr of the latest update (of the first one before any), read on the host for logging."""
    schedule = optimizer.learning_rate.learning_rate.asnumpy()
    step = int(optimizer.global_step.asnumpy()[0])
    return float(schedule[min(max(step - 1, 0), len(schedule) - 1)])
