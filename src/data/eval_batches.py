"""The evaluation batch source: batch b = the b-th `batch_size` files of a list loaded and put through
the eval transform in one call, unreadable files left out, so that a worker process of
`src/data/batch_workers.py` computes it outside the reading process's interpreter lock (eval.py's
pipeline, validation during training, infer.py on a folder). MindSpore-free."""
import numpy as np

from src.data.preprocess import ImageReadError, load_rgb


class EvalBatches:
    """Random-access source: b -> (images float32 [n, 3, S, S], labels [n]) of the readable files among
    the b-th `batch_size` of `order` (indices into `paths`, labelled by `labels[index]`); `skipped` (a
    SkippedImages, or None) records the unreadable ones in the reading process, in order."""

    def __init__(self, paths: list, order: np.ndarray, labels: np.ndarray, transform, batch_size: int, skipped=None):
        self.paths, self.order, self.labels, self.transform = paths, order, labels, transform
        self.batch_size, self.skipped = batch_size, skipped

    def __len__(self):
        return -(-len(self.order) // self.batch_size)

    def compute(self, b) -> tuple:
        """-> ((images, labels) of the readable files, [(path, why unreadable)] in order, '')."""
        images, labels, unreadable = [], [], []
        for index in self.order[int(b) * self.batch_size:(int(b) + 1) * self.batch_size]:
            path = self.paths[int(index)]
            try:
                images.append(self.transform(load_rgb(path)))
            except ImageReadError as e:
                unreadable.append((path, str(e)))
                continue
            labels.append(self.labels[int(index)])
        return (np.stack(images) if images else np.zeros(0, np.float32),
                np.array(labels, self.labels.dtype)), unreadable, ""

    def deliver(self, computed: tuple):
        batch, unreadable, _ = computed
        if self.skipped is not None:
            for path, reason in unreadable:
                self.skipped.record(path, reason)
        return batch
