"""Attention's BatchMatMul products compute the official formula, and DropPath's broadcast mask
scales the kept samples."""
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from src.layers.attention import Attention
from src.layers.drop_path import DropPath
from weighted_sum import WeightedSum


def _reference_attention(x, attn: Attention):
    """The official Attention.forward in NumPy (float64), from the cell's own weights."""
    b, n, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    qkv = x @ attn.qkv.weight.asnumpy().astype(np.float64).T
    qkv = qkv.reshape(b, n, 3, h, d).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = q @ k.transpose(0, 1, 3, 2) * attn.scale
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(b, n, c)
    return out @ attn.proj.weight.asnumpy().astype(np.float64).T + attn.proj.bias.asnumpy()


def test_attention_equals_the_official_formula():
    attn = Attention(48, num_heads=6)
    attn.set_train(False)
    x = np.random.default_rng(1).standard_normal((2, 7, 48))
    ours = attn(ms.Tensor(x.astype(np.float32))).asnumpy()
    expected = _reference_attention(x, attn)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


def test_drop_path_gradient_passes_the_kept_samples_scaled():
    layer = DropPath(0.5)
    layer.set_train(True)
    x = ms.Tensor(np.random.default_rng(2).standard_normal((64, 5, 3)).astype(np.float32))
    grad = ms.grad(WeightedSum(layer, ms.Tensor(np.ones((64, 5, 3), np.float32))))(x)
    kept = np.abs(grad.asnumpy() - 2.0) < 1e-6
    dropped = grad.asnumpy() == 0
    assert (kept | dropped).all() and (kept == kept[:, :1, :1]).all()  # one decision per sample, scale 1/0.5
    assert 10 < kept[:, 0, 0].sum() < 54
