"""A cell whose gradient is another cell's backward pass applied to a chosen cotangent."""
from mindspore import nn


class WeightedSum(nn.Cell):
    """x -> sum(inner(x) * w): its gradient w.r.t. x is inner's backward pass of w (not of ones,
    which would hide a wrong transpose or broadcast)."""

    def __init__(self, inner: nn.Cell, w):
        super().__init__()
        self.inner, self.w = inner, w

    def construct(self, x):
        return (self.inner(x) * self.w).sum()
