"""Validation metrics of the two-head model, per head and for the summed logits (whose confusion matrix
gives the per-class top-1), counted exactly: per-image sums over every batch divided by the number of
images, where the official engine.py averages per-batch means.  NumPy only: the onnxruntime scripts
count with it too."""
import numpy as np

from src.inference.heads import HEADS


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
    `results()` divides once at the end.  Heads: "summed" always; "conv" / "transformer" when given (then the
    Loss too: the mean of the two heads' cross entropies, as the official evaluate reports it).
    """

    def __init__(self):
        self.num_images = 0
        self.correct = {}
        self.loss = {"conv": 0.0, "transformer": 0.0}
        self.confusion = None
        self.has_heads = None

    def add(self, labels: np.ndarray, summed: np.ndarray, conv: np.ndarray = None, trans: np.ndarray = None):
        labels = np.asarray(labels).astype(np.int64)
        heads = conv is not None and trans is not None
        if self.has_heads is None:
            self.has_heads = heads
        logits = {"summed": summed, **({"conv": conv, "transformer": trans} if self.has_heads else {})}
        for head, values in logits.items():
            for k in (1, 5):
                self.correct[head, k] = self.correct.get((head, k), 0) + topk_correct(values, labels, k)
        if self.has_heads:
            self.loss["conv"] += cross_entropy_per_image(conv, labels).sum()
            self.loss["transformer"] += cross_entropy_per_image(trans, labels).sum()
        if self.confusion is None:
            self.confusion = np.zeros((summed.shape[1],) * 2, np.int64)
        np.add.at(self.confusion, (labels, np.argmax(summed, axis=1)), 1)
        self.num_images += len(labels)

    def results(self) -> dict:
        """{"summed": m, "conv": m, "transformer": m (with heads), "num_images": N, "confusion": [K, K] int64}
        with m = {"Loss" (with heads), "Top1-Acc", "Top5-Acc"}."""
        if self.num_images == 0:
            raise ValueError("evaluate: the dataset yielded no images")
        n = self.num_images
        results = {head: {"Top1-Acc": self.correct[head, 1] / n, "Top5-Acc": self.correct[head, 5] / n}
                   for head in HEADS if (head, 1) in self.correct}
        if self.has_heads:
            results["summed"]["Loss"] = float((self.loss["conv"] + self.loss["transformer"]) / 2 / n)
            results["conv"]["Loss"] = float(self.loss["conv"] / n)
            results["transformer"]["Loss"] = float(self.loss["transformer"] / n)
        results["num_images"] = n
        results["confusion"] = self.confusion
        return results


def format_eval_results(metrics: dict) -> str:
    """The ModelZoo log line for one entry of `evaluate`'s result, e.g. results["summed"]:
    "eval results: {'Loss': 1.4204, 'Top1-Acc': 0.731066, 'Top5-Acc': 0.90621}".

    Loss is rounded to 4 decimals and accuracies to 6, then printed as Python prints
    a dict of floats (shortest repr, so trailing zeros vanish: 0.906210 -> 0.90621).
    """
    rounded = {"Loss": round(float(metrics["Loss"]), 4),
               "Top1-Acc": round(float(metrics["Top1-Acc"]), 6),
               "Top5-Acc": round(float(metrics["Top5-Acc"]), 6)}
    return f"eval results: {rounded}"
