"""One compiled graph per evaluation: GRAPH mode compiles once per input shape, so a short last batch
is padded with zero images to the size of the others and their rows are cut from the outputs, which
leaves the real images' outputs unchanged (in inference each image is computed on its own: BatchNorm
uses its running statistics, attention mixes one image's tokens)."""
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
