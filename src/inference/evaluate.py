"""Run the MindSpore net over a validation dataset and count its metrics (src/metrics.py).

The network always runs at the first batch's size: a short last batch is padded
(src/batch_padding.py), so GRAPH mode compiles the forward pass once, not twice, and the
padding's rows are not counted.
"""
import mindspore as ms
import numpy as np

from src.batch_padding import pad_to_batch
from src.metrics import EvalCounts


def evaluate(net, dataset) -> dict:
    """Loss, top-1 and top-5 accuracy over a dataset yielding (images float32, labels int32), and the
    confusion matrix of the summed logits: `EvalCounts.results()` with both heads.

    The "sum" entry ranks conv + trans logits and, as the official evaluate does, its Loss is the mean
    of the two heads' cross entropies (not the cross entropy of the summed logits).  Data parallel
    training validates the whole set on every rank (src/trainer/trainer.py), so these counts are
    complete on each rank and are not all-reduced.
    """
    net.set_train(False)
    counts, forward = EvalCounts(), None
    for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        if forward is None:  # the first batch is a full one (or the only one)
            # float32: under amp_level a head may come out in float16
            forward = pad_to_batch(lambda x: tuple(out.asnumpy().astype(np.float32, copy=False)
                                                   for out in net(ms.Tensor(x))), len(images))
        conv, trans = forward(images)
        counts.add(labels, conv + trans, conv, trans)
    return counts.results()
