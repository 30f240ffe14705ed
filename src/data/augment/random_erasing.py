"""timm's RandomErasing on one normalised CHW float32 image (semantics: docs/training.md "Augmentations";
why not MindSpore's: docs/development.md "How it works: the data pipeline")."""
import math
import random
from typing import Optional

import numpy as np

from src.data.augment.noise import standard_normal

MODES = ("const", "rand", "pixel")
_ATTEMPTS = 10


class RandomErasing:
    """`__call__(img [C, H, W] float32) -> [C, H, W] float32`; the input is never modified.

    Draws come from the call's `rng`, else the constructor's, else the `random` module.
    """

    def __init__(self, probability: float = 0.5, mode: str = "const", min_count: int = 1, max_count: int = 1,
                 min_area: float = 0.02, max_area: float = 1 / 3, min_aspect: float = 0.3,
                 rng: Optional[random.Random] = None):
        if mode not in MODES:
            raise ValueError(f"random erasing mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 1 <= min_count <= max_count:
            raise ValueError(f"random erasing needs 1 <= min_count <= max_count, got {min_count}, {max_count}")
        self.probability, self.mode = probability, mode
        self.min_count, self.max_count = min_count, max_count
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
        self.rng = rng

    def __call__(self, img: np.ndarray, rng: Optional[random.Random] = None) -> np.ndarray:
        boxes = self.draw(img.shape[1:], rng)
        return self.apply(img, boxes) if boxes else img

    def draw(self, hw, rng: Optional[random.Random] = None) -> list:
        """The random draws of one call on an image of size `hw`: its boxes [(top, left, h, w, noise seed)],
        [] when it is left as is."""
        rng = rng or self.rng or random
        if rng.random() > self.probability:
            return []
        count = rng.randint(self.min_count, self.max_count)
        boxes = []
        for _ in range(count):
            box = self._sample_box(hw, count, rng)
            if box is not None:
                boxes.append((*box, rng.getrandbits(32) if self.mode != "const" else 0))
        return boxes

    def apply(self, img: np.ndarray, boxes: list) -> np.ndarray:
        """`img` with `boxes` (of `draw`) filled, in order; a copy."""
        img = np.array(img, dtype=np.float32)  # a copy: arrays handed over by the pipeline may be read-only
        for top, left, h, w, seed in boxes:
            img[:, top:top + h, left:left + w] = self.fill((img.shape[0], h, w), seed)
        return img

    def _sample_box(self, hw, count, rng):
        """(top, left, h, w) of one box, or None when 10 draws do not fit strictly inside the image."""
        img_h, img_w = hw
        for _ in range(_ATTEMPTS):
            area = rng.uniform(self.min_area, self.max_area) * img_h * img_w / count
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if w < img_w and h < img_h:
                return rng.randint(0, img_h - h), rng.randint(0, img_w - w), h, w
        return None

    def fill(self, shape, seed: int) -> np.ndarray:
        """A box's values: zeros (const), else value c * h * w + y * w + x (pixel) or c (rand, one per
        channel) of the counter-based noise stream `seed` (src/data/augment/noise.py)."""
        channels, h, w = shape
        if self.mode == "const":
            return np.zeros((channels, 1, 1), np.float32)
        shape = (channels, h, w) if self.mode == "pixel" else (channels, 1, 1)
        return standard_normal(seed, np.arange(int(np.prod(shape)), dtype=np.int64)).reshape(shape)
