"""The optimizer `optimizer` names, over parameters split by timm's weight-decay rule, each taking the
whole per-step learning-rate array (lr_schedule.py) so the schedule lives in the graph.  MindSpore is
imported when an optimizer is built: the config schema takes OPTIMIZERS from here without it."""
import numpy as np

OPTIMIZERS = ("adamw", "momentum", "sgd")
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
    from mindspore import nn
    params = (params_or_net.trainable_params() if isinstance(params_or_net, nn.Cell)
              else [p for p in params_or_net if p.requires_grad])
    decay = [p for p in params if _decays(p)]
    no_decay = [p for p in params if not _decays(p)]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"order_params": params}]


def create_optimizer(cfg, params_or_net, lr_schedule):
    """The `nn.Optimizer` `cfg.optimizer` names, over the trainable parameters of a net or a list.

    - adamw: `AdamW` (adamw.py, torch semantics), betas `cfg.beta`, `cfg.eps`.
    - momentum: SGD with heavy-ball momentum `cfg.momentum` (timm `--opt momentum`).
    - sgd: SGD with Nesterov momentum `cfg.momentum` (timm `--opt sgd`).
    The SGD variants add weight decay to the gradient (L2), as torch's SGD does;
    AdamW decays the weights directly.  `lr_schedule` needs an entry for every update:
    an update past its end fails (Gather index out of range on CPU).
    """
    import mindspore as ms
    from mindspore import nn
    from src.trainer.adamw import AdamW
    groups = param_groups(params_or_net, cfg.weight_decay)
    lr = ms.Tensor(np.asarray(lr_schedule, np.float32))
    if cfg.optimizer == "adamw":
        beta1, beta2 = cfg.beta
        return AdamW(groups, lr, beta1=beta1, beta2=beta2, eps=cfg.eps)
    if cfg.optimizer == "momentum":
        return nn.Momentum(groups, lr, momentum=cfg.momentum)
    if cfg.optimizer == "sgd":
        return nn.SGD(groups, lr, momentum=cfg.momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; known: {', '.join(OPTIMIZERS)}")


def current_lr(optimizer) -> float:
    """The lr of the latest update (of the first one before any), read on the host for logging."""
    schedule = optimizer.learning_rate.learning_rate.asnumpy()
    step = int(optimizer.global_step.asnumpy()[0])
    return float(schedule[min(max(step - 1, 0), len(schedule) - 1)])
