"""infer.py / infer_onnx.py: label every image of DATA, write the predictions JSON (and the features
and the report of unreadable files).  MindSpore-free: a model is a NumPy function
`forward(images [B, 3, S, S] float32) -> logits [B, C]`, so the onnxruntime script never imports MindSpore."""
import io
import os
import sys

import numpy as np

from src.config import add_output_arg
from src.data.folder import DatasetError
from src.data.labels import check_layout, read_labels_csv
from src.inference.images import InferenceError, find_images, image_batches, load_class_names, non_negative_int
from src.inference.metrics import EvalCounts
from src.io import write_atomic, write_json_atomic
from src.runtime.console import Console


def add_prediction_args(parser) -> None:
    """Options of infer.py and infer_onnx.py (their outputs are identical)."""
    add_output_arg(parser, "JSON {image path: class} (default: %(default)s); unreadable images go to "
                           "OUTPUT.errors.json {image path: reason}", default="predictions.json")
    parser.add_argument("--topk", type=non_negative_int, default=0,
                        help="K > 0: JSON values become the top K [{'class': i, 'prob': p}] (softmax of the "
                             "summed logits) and each line shows the top-1 probability (default: 0 = off)")
    parser.add_argument("--class_names", default="",
                        help="text file with one class name per line, or an ImageFolder dataset folder whose "
                             "sorted subfolders are the classes; adds names to the output")
    parser.add_argument("--features", default="", metavar="F.npz",
                        help="also write the embeddings to this .npz: paths [N], conv [N, C] (the pooled CNN "
                             "feature) and transformer [N, E] (the class token after trans_norm), rows in the "
                             "JSON's order (default: off)")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _check_class_names(names, num_classes: int, source: str) -> None:
    if names is not None and len(names) != num_classes:
        raise InferenceError(f"--class_names {source} has {len(names)} classes, the model predicts "
                             f"{num_classes}")


def _prediction(path: str, logits: np.ndarray, topk: int, names):
    """(JSON value, console line) of one image."""
    best = int(np.argmax(logits))
    parts = [f"class: {best}"] + ([f"name: {names[best]}"] if names else [])
    if not topk:
        return best, f"{path} ({', '.join(parts)})"
    probs = softmax(logits[None])[0]
    order = np.argsort(-probs, kind="stable")[:topk]  # stable: ties keep argmax's choice first
    top = [{"class": int(i), "prob": round(float(probs[i]), 6)} for i in order]
    if names:
        for entry in top:
            entry["name"] = names[entry["class"]]
    return top, f"{path} ({', '.join(parts)}, prob: {probs[best]:.4f})"


def _known_labels(cfg, names):
    """{abs image path: class} from --val_labels for infer.py / infer_onnx.py, or None: paths relative to
    DATA (its folder when DATA is one image), class names indexed by --class_names."""
    check_layout(cfg.dataset, "val_labels", cfg.val_labels)
    if not cfg.val_labels:
        return None
    root = cfg.data if os.path.isdir(cfg.data) else os.path.dirname(os.path.abspath(cfg.data))
    samples = read_labels_csv(cfg.val_labels, root, names or [], key="val_labels",
                              names_from=f"--class_names {cfg.class_names}", no_names="give them with --class_names")
    return {os.path.abspath(path): label for path, label in samples}


def predict(cfg, prog: str, build_forward) -> int:
    """infer.py / infer_onnx.py: label every image at cfg.data; returns the exit status.

    `build_forward(batch_size)` is called once the images and class names are
    known to be usable, so a bad DATA fails before any model is loaded.  A reader that closes
    stdout early (`| head -n 1`) stops the console lines only: every image is still labelled
    and the JSON written, which is what the status 0 then says.  With --val_labels the images
    it labels are also scored against it (one line on stderr; the JSON is unchanged).
    """
    paths = find_images(cfg.data)
    names = load_class_names(cfg.class_names) if cfg.class_names else None
    try:
        known = _known_labels(cfg, names)
    except DatasetError as e:
        raise InferenceError(str(e)) from None
    batch_size = min(cfg.batch_size, len(paths))  # one image runs at batch 1, not padded to batch_size
    forward = build_forward(batch_size)
    predictions, errors, console, counts, features = {}, {}, Console(), EvalCounts(), ([], [])
    for batch_paths, images in image_batches(paths, batch_size, cfg, errors, prog):
        logits = forward(images)
        if cfg.features:  # forward gives (logits, conv features, transformer features)
            logits, conv, trans = logits
            features[0].append(conv)
            features[1].append(trans)
        _check_class_names(names, logits.shape[1], cfg.class_names)
        for path, row in zip(batch_paths, logits):
            predictions[path], line = _prediction(path, row, cfg.topk, names)
            console.line(line)
        if known is not None:
            labelled = [i for i, path in enumerate(batch_paths) if path in known]
            if labelled:
                _check_labels_fit(cfg.val_labels, [known[batch_paths[i]] for i in labelled], logits.shape[1])
                counts.add([known[batch_paths[i]] for i in labelled], logits[labelled])
    errors_path = cfg.output + ".errors.json"
    write_errors(errors_path, errors)
    if not predictions:
        raise InferenceError(f"none of the {len(paths)} images could be read (reasons in {errors_path})")
    if cfg.features:
        write_features(cfg.features, list(predictions), *(np.concatenate(f) for f in features))
    write_json_atomic(cfg.output, predictions)
    skipped = f", skipped {len(errors)} unreadable (see {errors_path})" if errors else ""
    wrote = cfg.output + (f" and {cfg.features}" if cfg.features else "")
    print(f"{prog}: labelled {len(predictions)} images{skipped}; wrote {wrote}", file=sys.stderr)
    if known is not None:
        print(f"{prog}: {_accuracy_line(counts, len(known), cfg.val_labels)}", file=sys.stderr)
    return 0


def write_features(path: str, paths: list, conv: np.ndarray, transformer: np.ndarray) -> None:
    """The embeddings file of --features: `paths` [N] (str), `conv` [N, C], `transformer` [N, E] float32."""
    buffer = io.BytesIO()
    np.savez(buffer, paths=np.array(paths, dtype=str), conv=conv.astype(np.float32),
             transformer=transformer.astype(np.float32))
    write_atomic(path, buffer.getvalue(), mode="wb")


def _check_labels_fit(source: str, labels: list, num_classes: int) -> None:
    if max(labels) >= num_classes:
        raise InferenceError(f"{source} gives class {max(labels)}, the model predicts {num_classes} classes")


def _accuracy_line(counts, num_known: int, source: str) -> str:
    if counts.num_images == 0:
        return f"none of the {num_known} images in {source} was among those labelled"
    m = counts.results()["summed"]
    return (f"against {source}: {{'Top1-Acc': {round(m['Top1-Acc'], 6)}, 'Top5-Acc': {round(m['Top5-Acc'], 6)}}} "
            f"({counts.num_images} of its {num_known} images)")


def write_errors(path: str, errors: dict) -> None:
    """Write {path: reason} of the unreadable images, or remove a stale file when there are none."""
    if errors:
        write_json_atomic(path, errors)
    elif os.path.exists(path):
        os.remove(path)

