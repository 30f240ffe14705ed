"""eval_onnx.py's evaluation loop: a NumPy `forward` over the labelled image files of a dataset folder,
counted as eval.py counts (src/inference/metrics.py).  MindSpore-free."""
import os
import sys

from src.data.folder import DatasetError
from src.data.labels import split_samples
from src.inference.images import InferenceError, image_batches
from src.inference.metrics import EvalCounts


def evaluate_images(cfg, prog: str, forward) -> dict:
    """eval_onnx.py: `EvalCounts.results()` of `forward` (images -> `heads_of` dict) over the dataset
    at cfg.data, plus "printed": the line's dict (6 decimals) and "class_names".

    The images and labels are those of eval.py's pipeline: class folders (class = rank of the sorted
    folder name, a class folder without images is an error there too), or with val_labels the flat
    folder cfg.data labelled by that CSV, class names indexed by data_url/train_dir.
    """
    try:
        classes, samples = split_samples(cfg.data, "val_labels", cfg.val_labels, cfg.dataset,
                                         os.path.join(cfg.data_url, cfg.train_dir), cfg.train_labels)
    except DatasetError as e:
        raise InferenceError(str(e)) from None
    labels = dict(samples)
    num_classes = max(len(classes), max(labels.values()) + 1)
    errors, counts = {}, EvalCounts()
    for batch_paths, images in image_batches(sorted(labels), cfg.batch_size, cfg, errors, prog):
        heads = forward(images)
        if heads["summed"].shape[1] < num_classes:
            raise InferenceError(f"{cfg.val_labels or cfg.data} has {num_classes} classes, the model predicts "
                                 f"{heads['summed'].shape[1]}")
        counts.add([labels[p] for p in batch_paths], heads["summed"], heads.get("conv"), heads.get("transformer"))
    if not counts.num_images:
        raise InferenceError(f"none of the {len(labels)} images in {cfg.data} could be read")
    skipped = f", skipped {len(errors)} unreadable" if errors else ""
    print(f"{prog}: evaluated {counts.num_images} images in {len(classes) or num_classes} classes{skipped}",
          file=sys.stderr)
    results = counts.results()
    results["printed"] = {k: round(results["summed"][k], 6) for k in ("Top1-Acc", "Top5-Acc")}
    results["class_names"] = classes
    return results
