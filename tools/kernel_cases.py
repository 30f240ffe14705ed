"""The single ops that `tools/bench.py --parts kernels` times, at a variant's train-step shapes.

Plain Python, neither MindSpore nor torch: bench.py builds each case with MindSpore and
tools/bench_torch_worker.py with torch, from the same names and shapes.  The cases are the
transformer block's ops at [batch, tokens, embed] and the CNN branch's first bottleneck 3x3
convolution with its BatchNorm (a quarter of the image size, as after the stem) and the stem's max
pool (on the stem convolution's 64-channel map at half the image size).
"""
from src.variants import EXPANSION

KINDS = ("linear", "layernorm", "gelu", "softmax", "scores", "head_split", "conv3x3", "batchnorm", "maxpool")


def kernel_cases(hp: dict, image_size: int, batch: int) -> dict:
    """name -> {"kind": one of KINDS, "shape": input shape, ...} for a variant's hyper-parameters
    `hp` (`src.variants.variant_hparams`): "out" is a linear layer's output features; `scores` has
    two inputs of `shape` (q @ k^T); `head_split` reshapes its [B, N, 3C] input to
    [B, N, 3 * heads, C / heads] and moves the heads before the tokens, as the attention does."""
    embed, heads = hp["embed_dim"], hp["num_heads"]
    tokens = (image_size // hp["patch_size"]) ** 2 + 1
    hidden = int(embed * hp["mlp_ratio"])
    width, side = int(64 * hp["channel_ratio"]) // EXPANSION, image_size // 4
    tokens_shape = (batch, tokens, embed)
    return {
        f"Linear {embed}->{hidden} (fc1)": {"kind": "linear", "shape": tokens_shape, "out": hidden},
        f"LayerNorm {embed}": {"kind": "layernorm", "shape": tokens_shape},
        f"GELU (MLP, {hidden})": {"kind": "gelu", "shape": (batch, tokens, hidden)},
        "softmax (attention)": {"kind": "softmax", "shape": (batch, heads, tokens, tokens)},
        "q @ k^T": {"kind": "scores", "shape": (batch, heads, tokens, embed // heads)},
        "qkv split into heads": {"kind": "head_split", "shape": (batch, tokens, 3 * embed), "heads": heads},
        f"conv 3x3 {width}->{width} @{side}": {"kind": "conv3x3", "shape": (batch, width, side, side)},
        f"BatchNorm {width} @{side}": {"kind": "batchnorm", "shape": (batch, width, side, side)},
        f"max pool 3x3/2 (stem) 64 @{image_size // 2}": {"kind": "maxpool",
                                                         "shape": (batch, 64, image_size // 2, image_size // 2)},
    }
