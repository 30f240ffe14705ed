"""Stochastic depth (drop path) per sample, as timm's DropPath used by the official code."""
from mindspore import nn, ops


class DropPath(nn.Cell):
    """Zero a residual branch for a random subset of samples; identity at eval."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path rate must be in [0, 1), got {drop_prob}")
        self.keep_prob = 1.0 - drop_prob

    def construct(self, x):
        if not self.training or self.keep_prob == 1.0:
            return x
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        # timm's x / keep_prob * mask, with the scaling done on the [B, 1, ...] mask and the mask broadcast
        # by BroadcastTo: MindSpore's CPU arithmetic kernels run an implicitly broadcast operand (and a
        # division by a scalar) through index tables of 16 bytes per output element, kept for the whole run,
        # and several times slower than the same op on equal shapes (docs/benchmark.md "Memory")
        mask = ops.floor(self.keep_prob + ops.rand(shape, dtype=x.dtype)) * (1.0 / self.keep_prob)
        return x * ops.broadcast_to(mask, x.shape)


def drop_path_or_identity(drop_prob: float) -> nn.Cell:
    """timm's convention: no cell at all when the rate is 0, so eval graphs stay minimal."""
    return DropPath(drop_prob) if drop_prob > 0.0 else nn.Identity()
