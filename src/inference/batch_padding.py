"""One compiled graph per evaluation: a short last batch is padded to the size of the others.

MindSpore GRAPH mode compiles a network once per input shape, so a dataset whose size is not a
multiple of the batch would compile the forward pass a second time for its last batch alone (about
as long as the first compilation: seconds for a small model, much more for a large one on CPU).
Padding that batch with zero images and cutting their rows from the outputs costs at most one
batch's compute and leaves the real images' outputs unchanged: in inference every image is computed
on its own (BatchNorm uses its running statistics, attention mixes the tokens of one image only).
"""
import numpy as np


def pad_to_batch(forward, batch_size: int):
    """`forward(images [B, ...]) -> array or tuple of arrays with B rows`, always run at `batch_size`
    rows: a shorter batch is padded with zeros and the padding's rows are cut from every output."""
    def padded(images):
        n = len(images)
        if n < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), images.dtype)])
        outputs = forward(images)
        if isinstance(outputs, tuple):
            return tuple(output[:n] for output in outputs)
        return outputs[:n]
    return padded
