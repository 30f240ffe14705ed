"""torchvision's RandomResizedCrop (timm's RandomResizedCropAndInterpolation) on an RGB PIL image, drawing
from the `random.Random` it is given (semantics: docs/training.md "Augmentations"; why not MindSpore's:
docs/development.md "How it works: the data pipeline")."""
import math
import random
from typing import Optional

from PIL import Image

_ATTEMPTS = 10


class RandomResizedCrop:
    """`__call__(img, rng) -> img` of size x size; draws come from `rng`, else the `random` module."""

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), interpolation=Image.BILINEAR):
        if not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"RandomResizedCrop needs 0 < min <= max for scale and ratio, got {scale}, {ratio}")
        self.size, self.scale, self.ratio = size, tuple(scale), tuple(ratio)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.interpolation = interpolation

    def box(self, width: int, height: int, rng) -> tuple:
        """(left, top, w, h) of the crop in a width x height image."""
        area = width * height
        for _ in range(_ATTEMPTS):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, width - w), rng.randint(0, height - h), w, h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            w, h = int(round(height * self.ratio[1])), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image, rng: Optional[random.Random] = None) -> Image.Image:
        left, top, w, h = self.box(*img.size, rng or random)
        # crop, then resize: resize(box=...) would let the filter read pixels outside the box
        return img.crop((left, top, left + w, top + h)).resize((self.size, self.size), self.interpolation)
