"""Validation metrics of the two-head model: per head and for the summed logits.

Counts are exact: correct predictions and per-image losses are summed in
numpy over every batch (the last, partial one included) and divided by the
number of images at the end.  The official engine.py reports the loss as a
mean of per-batch means, which weights a short last batch more; per image is
the exact mean.

The network always runs at the first batch's size: a short last batch is
padded (src/tools/batch_padding.py), so GRAPH mode compiles the forward pass
once, not twice, and the padding's rows are not counted.
"""
import numpy as np

from .batch_padding import pad_to_batch

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


def evaluate(net, dataset) -> dict:
    """Loss, top-1 and top-5 accuracy over a dataset yielding (images float32, labels int32).

    Returns {"sum": m, "conv": m, "trans": m, "num_images": N} with
    m = {"Loss": float, "Top1-Acc": float, "Top5-Acc": float}.  The "sum" entry ranks
    conv + trans logits and, as the official evaluate does, its Loss is the mean of
    the two heads' cross entropies (not the cross entropy of the summed logits).
    """
    import mindspore as ms  # not at the top: the onnxruntime scripts import this module without MindSpore
    net.set_train(False)
    loss = {"conv": 0.0, "trans": 0.0}
    correct = {(head, k): 0 for head in HEADS for k in (1, 5)}
    num_images, forward = 0, None
    for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        if forward is None:  # the first batch is a full one (or the only one)
            # float32: under amp_level a head may come out in float16
            forward = pad_to_batch(lambda x: tuple(out.asnumpy().astype(np.float32, copy=False)
                                                   for out in net(ms.Tensor(x))), len(images))
        conv, trans = forward(images)
        labels = labels.astype(np.int64)
        logits = {"sum": conv + trans, "conv": conv, "trans": trans}
        for head in HEADS:
            for k in (1, 5):
                correct[head, k] += topk_correct(logits[head], labels, k)
        loss["conv"] += cross_entropy_per_image(conv, labels).sum()
        loss["trans"] += cross_entropy_per_image(trans, labels).sum()
        num_images += len(labels)
    if num_images == 0:
        raise ValueError("evaluate: the dataset yielded no images")
    loss["sum"] = (loss["conv"] + loss["trans"]) / 2
    results = {head: {"Loss": float(loss[head] / num_images),
                      "Top1-Acc": correct[head, 1] / num_images,
                      "Top5-Acc": correct[head, 5] / num_images} for head in HEADS}
    results["num_images"] = num_images
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
