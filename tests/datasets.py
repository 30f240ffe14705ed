"""Small real datasets written as ImageFolder trees, for tests that train or evaluate."""
import os

import numpy as np
from PIL import Image


def write_digits_folder(root, train_per_class: int = 30, val_per_class: int = 10, size: int = 32) -> str:
    """scikit-learn's handwritten digits (8x8, shipped in its wheel) as root/{train,val}/<digit>/*.png,
    upscaled to `size` px RGB. Returns root."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    images = (digits.images / 16.0 * 255).astype(np.uint8)
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)
        for split, chosen in (("train", indices[:train_per_class]),
                              ("val", indices[train_per_class:train_per_class + val_per_class])):
            folder = os.path.join(root, split, str(label))
            os.makedirs(folder, exist_ok=True)
            for i in chosen:
                Image.fromarray(images[i]).resize((size, size), Image.BILINEAR).convert("RGB").save(
                    os.path.join(folder, f"{i:04d}.png"))
    return str(root)
