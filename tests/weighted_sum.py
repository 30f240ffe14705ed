"""Cells whose gradient is another cell's backward pass applied to a chosen cotangent."""
import mindspore as ms
from mindspore import nn


class WeightedSum(nn.Cell):
    """x -> sum(inner(x) * w): its gradient w.r.t. x is inner's backward pass of w (not of ones,
    which would hide a wrong transpose or broadcast)."""

    def __init__(self, inner: nn.Cell, w):
        super().__init__()
        self.inner, self.w = inner, w

    def construct(self, x):
        return (self.inner(x) * self.w).sum()


class SumGrads(nn.Cell):
    """(x, sens) -> the gradients of sum(cell(x) * sens) w.r.t. x and the cell's trainable parameters:
    (dx, (dparam, ...)), or dx alone for a cell without parameters."""

    def __init__(self, cell: nn.Cell):
        super().__init__()
        self.cell = cell
        self.grad = ms.grad(self.loss, grad_position=0, weights=cell.trainable_params() or None)

    def loss(self, x, sens):
        return (self.cell(x) * sens).sum()

    def construct(self, x, sens):
        return self.grad(x, sens)
