"""Pre-norm transformer block of the transformer branch (official `Block`)."""
import mindspore as ms

from src.kernels import KernelCell, LayerNorm
from .attention import Attention
from .drop_path import drop_path_or_identity
from .mlp import Mlp


class Block(KernelCell):
    """x + DropPath(Attn(LN(x))), then x + DropPath(Mlp(LN(x))); LayerNorm eps 1e-6. With `residual`, the
    block's input is x + residual.

    On CPU each residual sum and the norm after it are one kernel each way (`LayerNorm(x, residual)`);
    the block, not the norm, decides, because AMP O2/O3 wrap every LayerNorm in a cast of its one output
    (and `set_plain_kernels`, which AMP and export call, switches the block with its norms)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale=None, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 approximate_gelu: bool = False):
        super().__init__()
        self.norm1 = LayerNorm(dim, epsilon=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias, qk_scale, attn_drop, drop)
        self.drop_path = drop_path_or_identity(drop_path)
        self.norm2 = LayerNorm(dim, epsilon=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop, approximate_gelu)
        self.choose_kernels()

    def make_kernels(self, library: str) -> None:
        """None of its own: the fused sums are its norms' kernels."""

    def construct(self, x, residual=None):
        fused = self.use_kernels and x.dtype == ms.float32
        if residual is None:
            h = self.norm1(x)
        elif fused:
            x, h = self.norm1(x, residual)
        else:
            x = x + residual
            h = self.norm1(x)
        if fused:
            x, h = self.norm2(x, self.drop_path(self.attn(h)))
        else:
            x = x + self.drop_path(self.attn(h))
            h = self.norm2(x)
        return x + self.drop_path(self.mlp(h))
