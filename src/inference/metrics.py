"""Validation metrics of the two-head model: per head and for the summed logits, whose confusion
matrix also gives the per-class top-1; and the --results_file JSON / PNG of eval.py and eval_onnx.py.

Counts are exact: correct predictions and per-image losses are summed in
numpy over every batch (the last, partial one included) and divided by the
number of images at the end.  The official engine.py reports the loss as a
mean of per-batch means, which weights a short last batch more; per image is
the exact mean.  NumPy only: the onnxruntime scripts count with it too.
"""
import io
import json
import os

import numpy as np

from src.io import write_atomic

HEADS = ("sum", "conv", "trans")  # summed logits (the model's prediction), then each head


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> int:
    """How many rows have their label among their k highest logits (k capped at the class count).

    Ties rank by column index, as a stable sort does.
    """
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return int((top == labels[:, None]).any(axis=1).sum())


def cross_entropy_per_image(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[label] per row, computed in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels]


class EvalCounts:
    """Running sums of one evaluation, batch by batch: top-1/top-5 hits per head, per-image cross
    entropy of each head, and the confusion matrix of the summed logits (rows: true class, columns:
    predicted = argmax, ties to the lower index as in `topk_correct`, so its trace is the top-1 hits).

    Every entry is a sum over images, so the counts of disjoint shards add up to those of the whole;
    `results()` divides once at the end.  Heads: "sum" always; "conv" / "trans" when given (then the
    Loss too: the mean of the two heads' cross entropies, as the official evaluate reports it).
    """

    def __init__(self):
        self.num_images = 0
        self.correct = {}
        self.loss = {"conv": 0.0, "trans": 0.0}
        self.confusion = None
        self.has_heads = None

    def add(self, labels: np.ndarray, summed: np.ndarray, conv: np.ndarray = None, trans: np.ndarray = None):
        labels = np.asarray(labels).astype(np.int64)
        heads = conv is not None and trans is not None
        if self.has_heads is None:
            self.has_heads = heads
        logits = {"sum": summed, **({"conv": conv, "trans": trans} if self.has_heads else {})}
        for head, values in logits.items():
            for k in (1, 5):
                self.correct[head, k] = self.correct.get((head, k), 0) + topk_correct(values, labels, k)
        if self.has_heads:
            self.loss["conv"] += cross_entropy_per_image(conv, labels).sum()
            self.loss["trans"] += cross_entropy_per_image(trans, labels).sum()
        if self.confusion is None:
            self.confusion = np.zeros((summed.shape[1],) * 2, np.int64)
        np.add.at(self.confusion, (labels, np.argmax(summed, axis=1)), 1)
        self.num_images += len(labels)

    def results(self) -> dict:
        """{"sum": m, "conv": m, "trans": m (with heads), "num_images": N, "confusion": [K, K] int64}
        with m = {"Loss" (with heads), "Top1-Acc", "Top5-Acc"}."""
        if self.num_images == 0:
            raise ValueError("evaluate: the dataset yielded no images")
        n = self.num_images
        results = {head: {"Top1-Acc": self.correct[head, 1] / n, "Top5-Acc": self.correct[head, 5] / n}
                   for head in HEADS if (head, 1) in self.correct}
        if self.has_heads:
            results["sum"]["Loss"] = float((self.loss["conv"] + self.loss["trans"]) / 2 / n)
            results["conv"]["Loss"] = float(self.loss["conv"] / n)
            results["trans"]["Loss"] = float(self.loss["trans"] / n)
        results["num_images"] = n
        results["confusion"] = self.confusion
        return results


def format_eval_results(metrics: dict) -> str:
    """The ModelZoo log line for one entry of `evaluate`'s result, e.g. results["sum"]:
    "eval results: {'Loss': 1.4204, 'Top1-Acc': 0.731066, 'Top5-Acc': 0.90621}".

    Loss is rounded to 4 decimals and accuracies to 6, then printed as Python prints
    a dict of floats (shortest repr, so trailing zeros vanish: 0.906210 -> 0.90621).
    """
    rounded = {"Loss": round(float(metrics["Loss"]), 4),
               "Top1-Acc": round(float(metrics["Top1-Acc"]), 6),
               "Top5-Acc": round(float(metrics["Top5-Acc"]), 6)}
    return f"eval results: {rounded}"


RESULTS_FILE_HELP = ("also write the results as JSON to this file (atomically): {\"num_images\": N, "
                     "\"summed\": {\"top1\", \"top5\", \"loss\"}, \"conv\": {...}, \"transformer\": {...}, "
                     "\"per_class_top1\": [...], \"confusion_matrix\": [[...]], \"class_names\": [...]}, and "
                     "with matplotlib the confusion matrix as R_confusion.png beside it; the printed lines "
                     "are the same with or without it")
_RESULTS_KEYS = (("summed", "sum"), ("conv", "conv"), ("transformer", "trans"))
LABELLED_CELLS = 30  # up to this many classes the PNG names every class and prints every count


def results_record(results: dict, class_names=None) -> dict:
    """`evaluate`'s (or EvalCounts') result as the --results_file JSON, unrounded (the printed line
    rounds).  A head missing from `results` (eval_onnx.py on a model exported without heads) and a
    missing Loss are left out rather than written as a guess.  per_class_top1[c] is the top-1 of the
    images of true class c (null for a class without images); class_names when the data has them."""
    record = {"num_images": int(results["num_images"])}
    for name, head in _RESULTS_KEYS:
        if head in results:
            m = results[head]
            record[name] = {"top1": float(m["Top1-Acc"]), "top5": float(m["Top5-Acc"]),
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


def plot_confusion(path: str, confusion: np.ndarray, class_names, top1: float, num_images: int) -> bool:
    """The confusion matrix as a PNG (atomically): each row divided by its image count, so the
    diagonal is each class's top-1.  Up to LABELLED_CELLS classes every cell shows its count and the
    axes name the classes; beyond, only the colours (1000 classes are 1000 pixel rows).  Returns
    False without matplotlib, which is optional (the JSON has every number)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    k = len(confusion)
    totals = confusion.sum(axis=1, keepdims=True)
    fractions = confusion / np.maximum(totals, 1)
    small = k <= LABELLED_CELLS
    side = max(5.0, 0.35 * k + 2.5) if small else 12.0
    # large: at least one pixel per class (nearest, not averaged away) and a square-root colour scale,
    # so that one confused image among 50 is still visible
    dpi = 100 if small else max(100, int(np.ceil(k / (0.7 * side))))
    norm = matplotlib.colors.Normalize(0.0, 1.0) if small else matplotlib.colors.PowerNorm(0.5, 0.0, 1.0)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    shown = ax.imshow(fractions, cmap="Blues", norm=norm, interpolation="nearest")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class's images")
    if small:
        names = [str(n) for n in class_names[:k]] if class_names and len(class_names) >= k else \
            [str(i) for i in range(k)]
        ax.set_xticks(range(k), names, rotation=90)
        ax.set_yticks(range(k), names)
        for (row, col), count in np.ndenumerate(confusion):
            if count:
                ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if fractions[row, col] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix of the summed logits: {num_images} images, {k} classes, top-1 {top1:.4f}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    write_atomic(path, buffer.getvalue(), mode="wb")
    return True
