"""Small real datasets written as ImageFolder trees, and the small-run options of the tests that train or
evaluate."""
import os

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EVAL_SMALL = ["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"),
              "--device_target", "CPU", "--arch", "conformer_reduced_patch16", "--image_size", "32",
              "--num_classes", "10", "--num_parallel_workers", "2", "--drop_path", "0"]
# training-only keys are not eval.py's flags; a few hundred images: every one once per epoch
SMALL = [*EVAL_SMALL, "--warmup_length", "0", "--repeated_aug", "0"]
NO_AUGMENT = ["--auto_augment", "none", "--mixup", "0", "--cutmix", "0", "--re_prob", "0", "--hflip", "0",
              "--min_crop", "1.0"]


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
