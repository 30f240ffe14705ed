"""The --results_file of eval.py and eval_onnx.py: the metrics as JSON and, with matplotlib, the
confusion matrix as a PNG beside it."""
import json
import os

import numpy as np

from src.confusion_plot import plot_confusion
from src.inference.heads import HEADS
from src.io import write_atomic

def results_record(results: dict, class_names=None) -> dict:
    """`evaluate`'s (or EvalCounts') result as the --results_file JSON, unrounded (the printed line
    rounds).  A head missing from `results` (eval_onnx.py on a model exported without heads) and a
    missing Loss are left out rather than written as a guess.  per_class_top1[c] is the top-1 of the
    images of true class c (null for a class without images); class_names when the data has them."""
    record = {"num_images": int(results["num_images"])}
    for head in HEADS:
        if head in results:
            m = results[head]
            record[head] = {"top1": float(m["Top1-Acc"]), "top5": float(m["Top5-Acc"]),
                            **({"loss": float(m["Loss"])} if "Loss" in m else {})}
    confusion = results.get("confusion")
    if confusion is not None:
        totals = confusion.sum(axis=1)
        record["per_class_top1"] = [float(hit / total) if total else None
                                    for hit, total in zip(np.diag(confusion), totals)]
        record["confusion_matrix"] = confusion.astype(int).tolist()
    if class_names:
        record["class_names"] = list(class_names)
    return record


def _json_text(value, depth: int = 0) -> str:
    """JSON indented like json.dumps(indent=2), except that a list of numbers stays on one line: a
    1000-class confusion matrix is then 1000 lines, not a million."""
    pad, inner = "  " * depth, "  " * (depth + 1)
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(key)}: {_json_text(v, depth + 1)}" for key, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        return "[\n" + ",\n".join(inner + _json_text(v, depth + 1) for v in value) + f"\n{pad}]"
    return json.dumps(value)


def confusion_png_path(results_file: str) -> str:
    """R.json -> R_confusion.png, beside it."""
    return os.path.splitext(results_file)[0] + "_confusion.png"


def write_results(path: str, record: dict) -> None:
    """Write the --results_file JSON atomically, then (with matplotlib) its confusion-matrix PNG."""
    write_atomic(path, _json_text(record) + "\n")
    if "confusion_matrix" in record:
        plot_confusion(confusion_png_path(path), np.array(record["confusion_matrix"]),
                       record.get("class_names"), record["summed"]["top1"], record["num_images"])
