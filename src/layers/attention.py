"""Multi-head self-attention of the transformer branch (official `Attention`)."""
from mindspore import nn, ops

from src.kernels import Softmax, Transpose
from src.kernels.dense import Dense


class Attention(nn.Cell):
    """tokens [B, N, C] -> [B, N, C]; one fused qkv projection, softmax in float32."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale=None,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale or self.head_dim ** -0.5
        self.qkv = Dense(dim, dim * 3, has_bias=qkv_bias)
        self.attn_drop = nn.Dropout(p=attn_drop)
        self.proj = Dense(dim, dim)
        self.proj_drop = nn.Dropout(p=proj_drop)
        # BatchMatMul's own transpose flag instead of transposing k, and the primitive rather than ops.matmul,
        # whose backward transposes its operands: MindSpore's CPU Transpose keeps a table of 8 bytes per
        # element for the whole run (docs/benchmark.md "Memory")
        self.scores = ops.BatchMatMul(transpose_b=True)
        self.weighted = ops.BatchMatMul()
        self.softmax = Softmax(self.scale)
        self.split_heads = Transpose((0, 2, 1, 3))
        self.merge_heads = Transpose((0, 2, 1, 3))

    def attention_probs(self, x):
        """tokens [B, N, C] -> (attention weights [B, heads, N, N] before dropout, values [B, heads, N, C/heads])."""
        n = x.shape[1]
        # batch kept as -1 so that no batch size is baked into the exported graph
        # heads split by Split, not by slicing qkv[0], qkv[1], qkv[2] of a [3, B, heads, N, d] tensor:
        # MindSpore's CPU StridedSlice on that 5-D tensor is several times slower, and Unstack, as fast
        # as Split, has no ONNX exporter
        qkv = self.split_heads(self.qkv(x).reshape(-1, n, 3 * self.num_heads, self.head_dim))
        q, k, v = ops.split(qkv, self.num_heads, axis=1)
        return self.softmax(self.scores(q, k)).astype(x.dtype), v

    def construct(self, x):
        _, n, c = x.shape
        attn, v = self.attention_probs(x)
        attn = self.attn_drop(attn)
        x = self.merge_heads(self.weighted(attn, v)).reshape(-1, n, c)
        return self.proj_drop(self.proj(x))
