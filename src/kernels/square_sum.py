"""The sum of squares of a step's gradients, for their global norm: one own kernel over all of them
on CPU; elsewhere MindSpore's way, one vector of every gradient and one reduction."""
import mindspore as ms
from mindspore import ops

from .ops import _custom, to_float32
from .switch import KernelCell

_flat = ops.MultitypeFuncGraph("flat")


@_flat.register("Tensor")
def _flat_tensor(tensor):
    return ops.cast(tensor, ms.float32).reshape(-1)


class SquareSum(KernelCell):
    """tensors (a tuple) -> the sum of the squares of all their elements, a float32 scalar."""

    def __init__(self):
        super().__init__()
        self.hyper_map = ops.HyperMap()
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        self.kernel = _custom(library, "SquareSum", lambda *shapes: [1], lambda *dtypes: ms.float32)

    def construct(self, tensors):
        if self.use_kernels:
            return self.kernel(*self.hyper_map(to_float32, tensors)).reshape(())
        flat = ops.cat(self.hyper_map(_flat, tensors))  # one reduction, not one per tensor
        return ops.reduce_sum(flat * flat)
