"""One training step where loss scaling, gradient all-reduce, clipping, gradient accumulation and EMA
combine freely, none disabling another; the order of its parts and why not MindSpore's
`nn.TrainOneStepWithLossScaleCell`: docs/development.md "How it works: the train step"."""
import mindspore as ms
from mindspore import nn, ops
from mindspore.communication.management import GlobalComm

from src.kernels.ops import in_place_op, to_float32
from src.kernels.square_sum import SquareSum
from src.kernels.switch import KernelCell, all_float32

from .allocator import release_free_memory


class NetWithLoss(nn.Cell):
    """images, targets -> scalar loss of the two-headed network."""

    def __init__(self, net: nn.Cell, loss_fn: nn.Cell):
        super().__init__(auto_prefix=False)  # the network keeps its official parameter names
        self.net = net
        self.loss_fn = loss_fn

    def construct(self, images, targets):
        return self.loss_fn(self.net(images), targets)


class _ScaledLoss(nn.Cell):
    """loss * scale, so that value_and_grad yields scaled gradients in one pass."""

    def __init__(self, net_with_loss: nn.Cell):
        super().__init__(auto_prefix=False)
        self.net_with_loss = net_with_loss

    def construct(self, images, targets, scale):
        return self.net_with_loss(images, targets) * scale


# Prefix of the gradient-accumulation buffers: left out of checkpoints, which are only written between
# optimizer steps, where the buffers are zero.
ACCUMULATED = "accumulated"
# a log value, not state: left out of training checkpoints
GRAD_NORM = "grad_norm"

# Per-parameter updates go through HyperMap, not Python loops: graph mode unrolls a loop into nested
# calls, and the ~460 gradients of the full-size variants exceed its call depth limit of 1000.
_drain_one = ops.MultitypeFuncGraph("drain_one")


@_drain_one.register("Tensor", "Tensor")
def _drain_one_tensor(buffer, grad):
    """grad + buffer; the buffer is zeroed once read."""
    total = grad + buffer
    return ops.depend(total, ops.assign(buffer, ops.zeros_like(buffer)))


class GradBuffers(KernelCell):
    """Gradient accumulation's buffers (Parameters, zero between optimizer steps): `add(grads)` adds a
    micro-batch's gradients into them, `drain(grads)` -> each buffer plus the last micro-batch's
    gradient, the buffers zeroed. On CPU with the own kernels one kernel each for all tensors; elsewhere
    MindSpore's ops per tensor."""

    def __init__(self, buffers: ms.ParameterTuple):
        super().__init__(auto_prefix=False)
        self.buffers = buffers
        self.hyper_map = ops.HyperMap()
        self.choose_kernels(plain=not all_float32(buffers))

    def make_kernels(self, library: str) -> None:
        n = len(self.buffers)
        written = [True] * n + [False] * n
        self.add_kernel = in_place_op(library, "AddInto", written)
        self.drain_kernel = in_place_op(library, "SumAndZero", written, lambda *shapes: tuple(shapes[n:]),
                                        lambda *dtypes: tuple(dtypes[n:]))

    def add(self, grads):
        if self.use_kernels:
            return self.add_kernel(*self.buffers, *self.hyper_map(to_float32, grads))
        return self.hyper_map(ops.assign_add, self.buffers, grads)

    def drain(self, grads):
        if self.use_kernels:
            return self.drain_kernel(*self.buffers, *self.hyper_map(to_float32, grads))
        return self.hyper_map(_drain_one, self.buffers, grads)


_scale_by = ops.MultitypeFuncGraph("scale_by")


@_scale_by.register("Tensor", "Tensor")
def _scale_by_tensor(factor, grad):
    return grad * ops.cast(factor, grad.dtype)


class _AccumulateGrads(nn.Cell):
    """(images, targets) -> loss of a micro-batch before the last of an optimizer step; adds its scaled
    gradients to `grad_buffers` (GradBuffers)."""

    def __init__(self, grad_fn, scale_sense: ms.Parameter, grad_buffers: GradBuffers):
        super().__init__(auto_prefix=False)
        self.grad_fn = grad_fn
        self.scale_sense = scale_sense
        self.grad_buffers = grad_buffers

    def construct(self, images, targets):
        scale = self.scale_sense
        loss, grads = self.grad_fn(images, targets, scale)
        loss = ops.depend(loss, self.grad_buffers.add(grads))
        return loss / scale


class TrainOneStep(nn.Cell):
    """(images, targets) -> (loss, applied, loss_scale); `applied` is False for a skipped step.
    `grad_norm` holds the last step's global gradient norm (unscaled, before clipping) for the logs.

    With accumulation_steps N > 1, call `accumulate(images, targets)` (-> loss) for the first N-1
    micro-batches of each optimizer step and the cell itself for the last.
    """

    def __init__(self, net_with_loss: NetWithLoss, optimizer, loss_scale: float = 1.0,
                 dynamic_loss_scale: bool = False, clip_grad_norm: float = 0.0, ema=None,
                 device_num: int = 1, accumulation_steps: int = 1):
        # auto_prefix=False keeps checkpoint names flat (conv1.weight, moments.conv1.weight, ema.conv1.weight)
        super().__init__(auto_prefix=False)
        self.net_with_loss = net_with_loss
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.optimizer_scales = getattr(optimizer, "takes_grad_scale", False)  # AdamW: with its update
        self.grad_fn = ms.value_and_grad(_ScaledLoss(net_with_loss), None, self.weights)
        self.scale_sense = ms.Parameter(ms.Tensor(loss_scale, ms.float32), name="scale_sense")
        # Dynamic: halve on overflow, double after 2000 clean steps (torch GradScaler's window).
        self.scale_update = (nn.DynamicLossScaleUpdateCell(loss_scale, 2, 2000) if dynamic_loss_scale
                             else nn.FixedLossScaleUpdateCell(loss_scale))
        self.clip_grad_norm = clip_grad_norm
        self.ema = ema
        self.skipped_steps = ms.Parameter(ms.Tensor(0, ms.int32), name="skipped_steps", requires_grad=False)
        self.grad_norm = ms.Parameter(ms.Tensor(0.0, ms.float32), name=GRAD_NORM, requires_grad=False)
        self.grad_reducer = (nn.DistributedGradReducer(self.weights, mean=True, degree=device_num,
                                                       group=GlobalComm.WORLD_COMM_GROUP)
                             if device_num > 1 else nn.Identity())
        self.accumulation_steps = accumulation_steps
        self.hyper_map = ops.HyperMap()
        self.square_sum = SquareSum()
        if accumulation_steps > 1:
            self.accumulated = self.weights.clone(prefix=ACCUMULATED, init="zeros")
            self.grad_buffers = GradBuffers(self.accumulated)
            self.accumulate = _AccumulateGrads(self.grad_fn, self.scale_sense, self.grad_buffers)

    def compile_steps(self, images, targets) -> None:
        """Compile the step's graphs (the accumulation step's first) before the first step runs, then
        hand the compiler's freed memory back to the system: the training peak is the first step's
        tensors on top of what compiling left resident (docs/training.md "Memory levers"). PyNative
        compiles nothing ahead."""
        if ms.get_context("mode") != ms.GRAPH_MODE:
            return
        if self.accumulation_steps > 1:
            self.accumulate.compile(images, targets)
        self.compile(images, targets)
        release_free_memory()

    def discard_accumulated(self) -> None:
        """Zero the buffers of an optimizer step that will not be completed (an epoch cut short)."""
        for buffer in self.accumulated:
            buffer.set_data(ops.zeros_like(buffer))

    def construct(self, images, targets):
        scale = self.scale_sense
        loss, grads = self.grad_fn(images, targets, scale)
        if self.accumulation_steps > 1:  # + the buffered micro-batches' gradients; the buffers are zeroed
            grads = self.grad_buffers.drain(grads)
        grads = self.grad_reducer(grads)
        # Unscaling, the finite check and clipping share one pass over the gradients: their global
        # sum of squares is finite exactly when every gradient is (barring a sum above 3e38, an
        # overflow too), and unscaling and clipping are one factor applied by one multiply each.
        # (ms.amp.all_finite, a division and ops.clip_by_global_norm took five passes, ~5 kernels
        # per parameter tensor, and the kernel count is what a step of small tensors costs.)
        square_sum = self.square_sum(grads)  # one pass over all of them, not one reduction per tensor
        finite = ops.isfinite(square_sum)
        overflow = ops.logical_not(finite)
        unscale = 1.0 / (scale * self.accumulation_steps)
        factor = unscale
        norm = ops.sqrt(square_sum) * unscale
        loss = ops.depend(loss, ops.assign(self.grad_norm, norm))
        if self.clip_grad_norm > 0:  # ops.clip_by_global_norm's rule: g * clip / max(norm, clip)
            factor = unscale * self.clip_grad_norm / ops.maximum(norm, self.clip_grad_norm)
        if finite:
            if self.optimizer_scales:
                loss = ops.depend(loss, self.optimizer(grads, factor))
            else:
                loss = ops.depend(loss, self.optimizer(self.hyper_map(ops.partial(_scale_by, factor), grads)))
            if self.ema is not None:
                loss = ops.depend(loss, self.ema())
        else:
            loss = ops.depend(loss, ops.assign_add(self.skipped_steps, ops.ones((), ms.int32)))
        loss = ops.depend(loss, self.scale_update(self.scale_sense, overflow))
        return loss / scale, finite, self.scale_sense
