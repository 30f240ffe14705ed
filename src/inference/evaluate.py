"""Run the MindSpore net over a validation dataset and count its metrics (src/inference/metrics.py).
The network always runs at the first batch's size: a short last batch is padded
(src/inference/batch_padding.py), so GRAPH mode compiles the forward pass once, not twice, and the
padding's rows are not counted.
"""
from src.inference.metrics import EvalCounts
from src.inference.network import numpy_forward
from src.inference.tta import with_tta


def evaluate(net, dataset, tta: str = "") -> dict:
    """Loss, top-1 and top-5 accuracy over a dataset yielding (images, labels int32), and the confusion
    matrix of the summed logits: `EvalCounts.results()` with both heads; `tta` as the config's. `net` takes
    the dataset's images as they are: for create_dataset's uint8 ones, wrap it in NormalizedInput
    (src/data/batch_finish.py).

    The "summed" entry ranks conv + trans logits and, as the official evaluate does, its Loss is the mean
    of the two heads' cross entropies (not the cross entropy of the summed logits).  Data parallel
    training validates the whole set on every rank (src/trainer/trainer.py), so these counts are
    complete on each rank and are not all-reduced.
    """
    net.set_train(False)
    counts, forward = EvalCounts(), None
    for images, labels in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        if forward is None:  # the first batch is a full one (or the only one, or one short of an unreadable file)
            forward = with_tta(numpy_forward(net, len(images)), tta)
        conv, trans = forward(images)
        counts.add(labels, conv + trans, conv, trans)
    return counts.results()
