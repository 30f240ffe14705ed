"""The ImageFolder layout: <root>/<class>/**/<image>, class index = rank of the sorted folder name.

MindSpore-free: the training pipeline (imagenet.py) and the onnxruntime
evaluation (eval_onnx.py) read the same files with the same labels from here.
"""
import os

from .preprocess import is_image_file
from ..errors import ConformerError


class DatasetError(ConformerError, ValueError):
    """A dataset folder problem, reported as one line naming the folder."""


def scan_image_folder(root: str):
    """-> (class names sorted, [(image path, class index)] sorted by class then path).

    Sub-folders of a class folder are searched too (symlinks followed, as torchvision does).
    """
    if not os.path.isdir(root):
        raise DatasetError(f"data folder not found: {root}")
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    if not classes:
        raise DatasetError(f"no class folders in {root} (expected {root}/<class>/<image>)")
    samples = []
    for label, name in enumerate(classes):
        folder = os.path.join(root, name)
        paths = sorted(os.path.join(dirpath, f) for dirpath, _, files in os.walk(folder, followlinks=True)
                       for f in files if is_image_file(f))
        if not paths:
            raise DatasetError(f"class folder has no images: {folder}")
        samples += [(path, label) for path in paths]
    return classes, samples
