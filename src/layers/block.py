"""Pre-norm transformer block of the transformer branch (official `Block`)."""
from mindspore import nn

from src.kernels import LayerNorm
from .attention import Attention
from .drop_path import drop_path_or_identity
from .mlp import Mlp


class Block(nn.Cell):
    """x + DropPath(Attn(LN(x))), then x + DropPath(Mlp(LN(x))); LayerNorm eps 1e-6. With `residual`, the
    block's input is x + residual (each residual sum is made by the norm that follows it: one kernel on CPU)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale=None, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 approximate_gelu: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim, epsilon=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = LayerNorm(dim, epsilon=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, approximate_gelu)

    def construct(self, x, residual=None):
        if residual is None:
            h = self.norm1(x)
        else:
            x, h = self.norm1(x, residual)
        x, h = self.norm2(x, self.drop_path(self.attn(h)))
        return x + self.drop_path(self.mlp(h))
