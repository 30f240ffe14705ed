"""The graph's end of the input pipeline: a raw training batch (uint8 pixels, mixing weights and boxes,
from `create_dataset(..., raw=True)`) normalised, erased and mixed on the device, as timm's prefetcher
does on the GPU, and the uint8 evaluation batches normalised; the same operations as `finish_batch` (src/data/train_batches.py) does in
NumPy, so both give the same values within float rounding. Why and what it saves:
docs/training.md "Data workers"."""
import math

import mindspore as ms
from mindspore import nn, ops

from src.data.augment.mixup import create_mixup
from src.data.augment.noise import MASK, MULTIPLIER, SHIFT, UNIFORM_BITS
from src.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from src.data.train_batches import CUTMIX_FIELDS, ERASE_FIELDS


def _hash32(x):
    for _ in range(2):
        x = ops.bitwise_and(ops.bitwise_xor(x, ops.bitwise_right_shift(x, SHIFT)) * MULTIPLIER, MASK)
    return ops.bitwise_xor(x, ops.bitwise_right_shift(x, SHIFT))


def _standard_normal(seed, index):
    """noise.standard_normal in graph ops: seed int64 [B, 1, 1, 1], index int64 [B, C, H, W]."""
    key = _hash32(ops.bitwise_and(seed, MASK))
    first = _hash32(ops.bitwise_and(key + 2 * index, MASK))
    second = _hash32(ops.bitwise_and(key + 2 * index + 1, MASK))
    scale = 2.0 ** -UNIFORM_BITS
    u1 = ops.cast(ops.bitwise_right_shift(first, 32 - UNIFORM_BITS) + 1, ms.float32) * scale
    u2 = ops.cast(ops.bitwise_right_shift(second, 32 - UNIFORM_BITS), ms.float32) * scale
    return ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(2 * math.pi * u2)


def _inside(rows, cols, top, bottom, left, right):
    """bool [B, 1, H, W]: pixel in the box [top, bottom) x [left, right) of its row (int64 [B, 1, 1, 1] each)."""
    return ops.logical_and(ops.logical_and(rows >= top, rows < bottom), ops.logical_and(cols >= left, cols < right))


def _mask(inside):
    """bool -> float32 0/1. The finishing selects by multiplying with masks, not by ops.where: with
    graph_kernel_fusion on, the fused kernel of a `where` over broadcast operands computed wrong values;
    with 0/1 masks the sums are still exact selections."""
    return ops.cast(inside, ms.float32)


class Normalize(nn.Cell):
    """uint8 [B, 3, H, W] -> float32, ImageNet mean/std normalised: preprocess.normalize_pixels in the graph."""

    def __init__(self):
        super().__init__()
        self.mean = ms.Tensor(IMAGENET_MEAN.reshape(1, 3, 1, 1))
        self.std = ms.Tensor(IMAGENET_STD.reshape(1, 3, 1, 1))

    def construct(self, pixels):
        return (ops.cast(pixels, ms.float32) / 255.0 - self.mean) / self.std


class NormalizedInput(nn.Cell):
    """`net` taking uint8 images: they are normalised first (evaluation of eval.py's pipeline)."""

    def __init__(self, net: nn.Cell):
        super().__init__(auto_prefix=False)  # the network keeps its parameter names
        self.normalize = Normalize()
        self.net = net

    def construct(self, pixels):
        return self.net(self.normalize(pixels))


class BatchFinish(nn.Cell):
    """(pixels uint8 [B, 3, S, S], weights float32 [B, 2], boxes int64 [B, 4 + 5 E]) -> float32
    [B, 3, S, S]; `erase_mode` the recipe's re_mode, `erase_slots` E its re_count (0: no erasing);
    `mixing` False for a recipe that never mixes (its weights are always (1, 0) and its boxes empty),
    whose graph then leaves the mixing out."""

    def __init__(self, erase_mode: str = "pixel", erase_slots: int = 0, mixing: bool = True):
        super().__init__()
        self.normalize = Normalize()
        self.erase_mode, self.erase_slots, self.mixing = erase_mode, erase_slots, mixing

    def construct(self, pixels, weights, boxes):
        images = self.normalize(pixels)
        _, channels, height, width = images.shape
        rows = ops.arange(height, dtype=ms.int64).reshape(1, 1, height, 1)
        cols = ops.arange(width, dtype=ms.int64).reshape(1, 1, 1, width)
        channel = ops.arange(channels, dtype=ms.int64).reshape(1, channels, 1, 1)
        fields = boxes.reshape(boxes.shape[0], -1, 1, 1)
        for k in range(self.erase_slots):
            start = CUTMIX_FIELDS + k * ERASE_FIELDS
            top, left, h, w, seed = (fields[:, start + j:start + j + 1] for j in range(ERASE_FIELDS))
            if self.erase_mode == "const":
                fill = ops.zeros_like(images)
            elif self.erase_mode == "rand":
                fill = _standard_normal(seed, channel + ops.zeros_like(pixels, dtype=ms.int64))
            else:
                fill = _standard_normal(seed, channel * h * w + (rows - top) * w + (cols - left))
            erased = _mask(_inside(rows, cols, top, top + h, left, left + w))
            images = images * (1.0 - erased) + fill * erased
        if not self.mixing:
            return images
        cut = _mask(_inside(rows, cols, *(fields[:, j:j + 1] for j in range(CUTMIX_FIELDS))))
        own = weights[:, 0].reshape(-1, 1, 1, 1) * (1.0 - cut)
        partner = weights[:, 1].reshape(-1, 1, 1, 1) * (1.0 - cut) + cut
        return images * own + ops.flip(images, (0,)) * partner


def batch_finish(cfg) -> BatchFinish:
    """The BatchFinish of `cfg`'s training recipe."""
    return BatchFinish(cfg.re_mode, cfg.re_count if cfg.re_prob > 0 else 0, create_mixup(cfg).active)
