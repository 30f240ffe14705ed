"""Run the MindSpore net over a validation dataset and count its metrics (src/metrics.py).

The network always runs at the first batch's size: a short last batch is padded
(src/batch_padding.py), so GRAPH mode compiles the forward pass once, not twice, and the
padding's rows are not counted.
"""
import mindspore as ms
import numpy as np

from src.batch_padding import pad_to_batch
from src.metrics import HEADS, cross_entropy_per_image, topk_correct


def evaluate(net, dataset) -> dict:
    """Loss, top-1 and top-5 accuracy over a dataset yielding (images float32, labels int32).

    Returns {"sum": m, "conv": m, "trans": m, "num_images": N} with
    m = {"Loss": float, "Top1-Acc": float, "Top5-Acc": float}.  The "sum" entry ranks
    conv + trans logits and, as the official evaluate does, its Loss is the mean of
    the two heads' cross entropies (not the cross entropy of the summed logits).
    """
    net.set_train(False)
    loss = {"conv": 0.0, "trans": 0.0}
    correct = {(head, k): 0 for head in HEADS for k in (1, 5)}
    num_images, forward = 0, None
    for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        if forward is None:  # the first batch is a full one (or the only one)
            forward = pad_to_batch(lambda x: tuple(out.asnumpy() for out in net(ms.Tensor(x))), len(images))
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
