"""timm's RandomErasing on one normalised CHW float32 image (semantics: docs/training.md "Augmentations";
why not MindSpore's: docs/development.md "How it works: the data pipeline")."""
import math
import random
from typing import Optional

import numpy as np

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
        rng = rng or self.rng or random
        if rng.random() > self.probability:
            return img
        img = np.array(img, dtype=np.float32)  # a copy: arrays handed over by the pipeline may be read-only
        count = rng.randint(self.min_count, self.max_count)
        for _ in range(count):
            box = self._sample_box(img.shape[1:], count, rng)
            if box is not None:
                top, left, h, w = box
                img[:, top:top + h, left:left + w] = self._fill((img.shape[0], h, w), rng)
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

    def _fill(self, shape, rng) -> np.ndarray:
        channels, h, w = shape
        if self.mode == "const":
            return np.zeros((channels, 1, 1), np.float32)
        # NumPy draws the normals, seeded from `rng` so they are reproducible with it
        normal = np.random.default_rng(rng.getrandbits(64))
        return normal.standard_normal((channels, h, w) if self.mode == "pixel" else (channels, 1, 1),
                                      dtype=np.float32)
