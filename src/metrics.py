"""Validation metrics of the two-head model: per head and for the summed logits.

Counts are exact: correct predictions and per-image losses are summed in
numpy over every batch (the last, partial one included) and divided by the
number of images at the end.  The official engine.py reports the loss as a
mean of per-batch means, which weights a short last batch more; per image is
the exact mean.  NumPy only: the onnxruntime scripts count with it too.
"""
import numpy as np

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
                     "\"summed\": {\"top1\", \"top5\", \"loss\"}, \"conv\": {...}, \"transformer\": {...}}; "
                     "the printed lines are the same with or without it")
_RESULTS_KEYS = (("summed", "sum"), ("conv", "conv"), ("transformer", "trans"))


def results_record(results: dict) -> dict:
    """`evaluate`'s result as the --results_file JSON, unrounded (the printed line rounds).
    A head missing from `results` (eval_onnx.py sees only the summed logits) and a missing
    Loss are left out rather than written as a guess."""
    record = {"num_images": int(results["num_images"])}
    for name, head in _RESULTS_KEYS:
        if head in results:
            m = results[head]
            record[name] = {"top1": float(m["Top1-Acc"]), "top5": float(m["Top5-Acc"]),
                            **({"loss": float(m["Loss"])} if "Loss" in m else {})}
    return record
