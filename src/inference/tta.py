"""Test-time augmentation around a NumPy forward function: the one implementation, for the MindSpore
and the onnxruntime scripts alike."""
import numpy as np

TTA_MODES = ("", "flip")  # '' = none


def flip_tta(forward):
    """`forward` averaged over the images and their horizontal mirrors (W flipped): each output (a dict
    of heads, or a tuple of heads or of logits and features) is averaged on its own, so the summed
    logits of averaged heads are the average of the summed logits."""
    def averaged(images):
        plain, mirrored = forward(images), forward(np.ascontiguousarray(images[..., ::-1]))
        if isinstance(plain, dict):
            return {head: (plain[head] + mirrored[head]) / 2 for head in plain}
        if isinstance(plain, tuple):
            return tuple((p + m) / 2 for p, m in zip(plain, mirrored))
        return (plain + mirrored) / 2
    averaged.session = getattr(forward, "session", None)
    return averaged


def with_tta(forward, tta: str):
    """`forward` under the config's `tta` ('' = as it is)."""
    return flip_tta(forward) if tta == "flip" else forward
