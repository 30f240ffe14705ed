"""nn.BatchNorm2d, optionally followed by a ReLU, that runs the own kernels on CPU (same parameters,
names and running statistics; BatchNorm and ReLU as one kernel each way)."""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from .ops import _custom
from .switch import KernelCell


def batch_norm_ops(library: str, relu: bool = False):
    """(training op, inference op) over NCHW float32 maps; with `relu`, each followed by a ReLU.

    Training: (x, gamma, beta, moving_mean, moving_var, momentum [1], eps [1]) -> (y, mean, rstd,
    new moving_mean, new moving_var), `momentum` the weight of the batch's statistics.
    Inference: (x, gamma, beta, moving_mean, moving_var, eps [1]) -> y."""
    kind = "BatchNormRelu" if relu else "BatchNorm"
    # with relu the backward also reads y, whose zeros block the gradient
    backward = _custom(library, f"{kind}TrainBackward", lambda dy, x, m, r, g, *y: (x, g, g),
                       lambda dy, x, m, r, g, *y: (x, g, g))

    def train_bprop(x, gamma, beta, moving_mean, moving_var, momentum, eps, out, dout):
        if relu:
            dx, dgamma, dbeta = backward(dout[0], x, out[1], out[2], gamma, out[0])
        else:
            dx, dgamma, dbeta = backward(dout[0], x, out[1], out[2], gamma)
        return (dx, dgamma, dbeta, ops.zeros_like(moving_mean), ops.zeros_like(moving_var),
                ops.zeros_like(momentum), ops.zeros_like(eps))

    def infer_bprop(x, gamma, beta, moving_mean, moving_var, eps, out, dout):
        # an affine map per channel: rarely differentiated (frozen statistics), so MindSpore's ops
        if relu:
            dout = dout * (out > 0).astype(dout.dtype)
        rstd = ops.rsqrt(moving_var + eps).reshape(1, -1, 1, 1)
        axes = (0, 2, 3)
        dgamma = (dout * (x - moving_mean.reshape(1, -1, 1, 1)) * rstd).sum(axes)
        return (dout * rstd * gamma.reshape(1, -1, 1, 1), dgamma, dout.sum(axes), ops.zeros_like(moving_mean),
                ops.zeros_like(moving_var), ops.zeros_like(eps))

    train = _custom(library, f"{kind}TrainForward", lambda x, gamma, *rest: (x, gamma, gamma, gamma, gamma),
                    lambda x, *rest: (x,) * 5, train_bprop)
    infer = _custom(library, f"{kind}InferForward", lambda x, *rest: x, lambda x, *rest: x, infer_bprop)
    return train, infer


class BatchNorm2d(nn.BatchNorm2d, KernelCell):
    """nn.BatchNorm2d(channels, eps, momentum), `momentum` MindSpore's (the weight of the running value);
    with `relu`, followed by a ReLU (the official code's BatchNorm2d -> ReLU pairs)."""

    def __init__(self, channels: int, eps: float, momentum: float, relu: bool = False):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.relu = relu
        self.eps_tensor = ms.Tensor(np.array([eps], np.float32))
        self.batch_weight = ms.Tensor(np.array([1.0 - momentum], np.float32))
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.train_kernel, self.infer_kernel = batch_norm_ops(library, self.relu)

    def construct(self, x):
        if not (self.use_kernels and x.dtype == ms.float32 and self.use_batch_statistics is None):
            y = super().construct(x)
            return ops.relu(y) if self.relu else y
        if not self.training:
            return self.infer_kernel(x, self.gamma, self.beta, self.moving_mean, self.moving_variance,
                                     self.eps_tensor)
        y, _, _, mean, variance = self.train_kernel(x, self.gamma, self.beta, self.moving_mean,
                                                    self.moving_variance, self.batch_weight, self.eps_tensor)
        y = ops.depend(y, ops.assign(self.moving_mean, mean))
        return ops.depend(y, ops.assign(self.moving_variance, variance))
