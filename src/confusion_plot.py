"""The confusion matrix of an evaluation as a PNG (matplotlib, optional)."""
import io

import numpy as np

from src.io import write_atomic

LABELLED_CELLS = 30  # up to this many classes the PNG names every class and prints every count


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
