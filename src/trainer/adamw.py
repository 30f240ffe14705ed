"""AdamW with torch semantics (`torch.optim.AdamW`, amsgrad=False) on one own CPU kernel or MindSpore's
fused one, taking the whole per-step learning-rate array and reading entry `global_step` of it at each
update; why not MindSpore's own AdamW: docs/training.md "Optimizers"."""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.kernels.build import kernel_library
from src.kernels.ops import in_place_op, to_float32
from src.kernels.switch import all_float32, cpu_kernels_wanted


_adamw_update = ops.MultitypeFuncGraph("adamw_update")


@_adamw_update.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                        "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_update_one(fused, beta1, beta2, eps_hat, lr_hat, decay_per_lr, grad_scale, weight_decay, param, m, v,
                      grad):
    """torch.optim.AdamW on one tensor of the gradient times `grad_scale`, as one AdamWeightDecay kernel (see
    AdamW.construct) after the multiplication."""
    grad = ops.cast(grad, param.dtype)
    return fused(param, m, v, lr_hat, beta1, beta2, eps_hat, weight_decay * decay_per_lr,
                 grad * ops.cast(grad_scale, grad.dtype))


_adamw_update_scaling = ops.MultitypeFuncGraph("adamw_update_scaling")


@_adamw_update_scaling.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                                "Tensor", "Tensor", "Tensor", "Tensor")
def _adamw_update_scaling_one(fused, beta1, beta2, eps_hat, lr_hat, decay_per_lr, inverse_scale, weight_decay, param,
                              m, v, grad):
    """The same as one FusedCastAdamWeightDecay kernel, which multiplies the gradient by 1 / its last input."""
    return fused(param, m, v, lr_hat, beta1, beta2, eps_hat, weight_decay * decay_per_lr,
                 ops.cast(grad, param.dtype), inverse_scale)


class AdamW(nn.Optimizer):
    """torch.optim.AdamW (amsgrad=False) with an lr array indexed by `global_step`.

    `params` may be `param_groups(...)` output (per-group weight decay) or a list of
    Parameters (then `weight_decay` applies to all of them).

    Each tensor is updated by MindSpore's fused `AdamWeightDecay` kernel (one kernel per tensor
    instead of a dozen elementwise ones: with hundreds of tensors the update's kernel count, not its
    arithmetic, is its cost).  That kernel has no bias correction; torch's step
        p <- p * (1 - lr*wd) - lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)
    equals its  p <- p - lr_hat * (m / (sqrt(v) + eps_hat) + decay * p)  with
        lr_hat = lr * sqrt(bc2) / bc1,  eps_hat = eps * sqrt(bc2),  decay = wd * lr / lr_hat,
    so the three are computed per step and passed in (the kernel takes them as tensors).

    The gradients come with a factor `grad_scale` (the train step's unscaling and clipping). On CPU with
    the own kernels (float32 parameters, constant weight decay), one kernel updates every tensor in place
    with torch's arithmetic (src/kernels/csrc/adamw.cc). Otherwise on CPU the update
    runs MindSpore's FusedCastAdamWeightDecay, the same update that multiplies the gradient by the factor
    itself: one kernel per tensor instead of two. It is a CPU kernel only; elsewhere a multiplication
    precedes AdamWeightDecay.
    """

    takes_grad_scale = True

    def __init__(self, params, learning_rate, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0):
        super().__init__(learning_rate, params, weight_decay)
        self.beta1 = ms.Tensor(beta1, ms.float32)
        self.beta2 = ms.Tensor(beta2, ms.float32)
        self.eps = ms.Tensor(eps, ms.float32)
        self.moments1 = self._parameters.clone(prefix="adam_m", init="zeros")
        self.moments2 = self._parameters.clone(prefix="adam_v", init="zeros")
        self.scales_in_kernel = ms.get_context("device_target") == "CPU"
        self.fused = ops.FusedCastAdamWeightDecay() if self.scales_in_kernel else ops.AdamWeightDecay()
        self.in_one_kernel = cpu_kernels_wanted() and not self.dynamic_weight_decay and all_float32(self._parameters)
        if self.in_one_kernel:
            n = len(self._parameters)
            decays = self.group_weight_decay if self.is_group else [weight_decay] * n
            self.decays = ms.Tensor(np.asarray(decays, np.float32))
            # 1 - beta from the Python floats, as torch takes them (1 - 0.999 in float32 is 1.3e-5 off)
            self.constants = ms.Tensor(np.asarray([eps, beta2, 1.0 - beta1, 1.0 - beta2], np.float32))
            self.update_all = in_place_op(kernel_library(), "AdamWUpdate",
                                          [False] * 2 + [True] * n + [False] * n + [True] * (2 * n))

    def construct(self, gradients, grad_scale=None):
        if grad_scale is None:
            grad_scale = ops.ones((), ms.float32)
        lr = self.get_lr()  # entry `global_step` of the schedule, read before the increment
        step = ops.cast(self.global_step, ms.float32).reshape(()) + 1.0
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        if self.in_one_kernel:
            hyper = ops.concat((ops.stack((lr.reshape(()), step, ops.cast(grad_scale, ms.float32).reshape(()))),
                                self.constants))
            return self.update_all(hyper, self.decays, *self._parameters, *self.hyper_map(to_float32, gradients),
                                   *self.moments1, *self.moments2)
        weight_decay = self.get_weight_decay()
        bias_correction1 = 1.0 - ops.pow(self.beta1, step)
        bias_correction2_sqrt = ops.sqrt(1.0 - ops.pow(self.beta2, step))
        lr_hat = lr * bias_correction2_sqrt / bias_correction1
        decay_per_lr = bias_correction1 / bias_correction2_sqrt  # wd * lr / lr_hat = wd * this
        if self.scales_in_kernel:
            update = ops.partial(_adamw_update_scaling, self.fused, self.beta1, self.beta2,
                                 self.eps * bias_correction2_sqrt, lr_hat, decay_per_lr, 1.0 / grad_scale)
        else:
            update = ops.partial(_adamw_update, self.fused, self.beta1, self.beta2, self.eps * bias_correction2_sqrt,
                                 lr_hat, decay_per_lr, grad_scale)
        if self.is_group:
            return self.hyper_map(update, weight_decay, self._parameters, self.moments1, self.moments2,
                                  gradients)
        return self.hyper_map(ops.partial(update, weight_decay), self._parameters, self.moments1,
                              self.moments2, gradients)
