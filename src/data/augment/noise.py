"""Counter-based standard normal noise: value i of stream `seed` is a pure function of (seed, i), computed
the same way by NumPy here and by the training graph (src/data/batch_finish.py), so random erasing's
noise can be drawn where the batch is finished and still be reproducible.

Written here because NumPy's and MindSpore's generators are sequential streams that neither side can
reproduce element by element. Each value: two 32-bit integers from an integer hash of (seed, 2i) and
(seed, 2i + 1), turned into two uniforms of 24 bits, then Box-Muller in float32. The hash uses only
64-bit integer multiplies below 2**63, masks, xors and shifts, which every backend computes exactly.
"""
import numpy as np

MASK = 0xFFFFFFFF
MULTIPLIER = 0x45D9F3B  # the integer hash's multiplier: below 2**31, so products fit in int64
SHIFT = 16
UNIFORM_BITS = 24  # a float32 holds integers up to 2**24 exactly


def hash32(x: np.ndarray) -> np.ndarray:
    """int64 array of 32-bit values -> their 32-bit hashes (int64)."""
    for _ in range(2):
        x = ((x ^ (x >> SHIFT)) * MULTIPLIER) & MASK
    return x ^ (x >> SHIFT)


def standard_normal(seed: int, index: np.ndarray) -> np.ndarray:
    """float32 N(0, 1) values number `index` (int64 array, any shape) of the stream `seed` (32 bits)."""
    key = hash32(np.int64(seed & MASK))
    first = hash32((key + 2 * index) & MASK)
    second = hash32((key + 2 * index + 1) & MASK)
    scale = np.float32(2.0 ** -UNIFORM_BITS)
    u1 = ((first >> (32 - UNIFORM_BITS)) + 1).astype(np.float32) * scale  # (0, 1]: its log is finite
    u2 = (second >> (32 - UNIFORM_BITS)).astype(np.float32) * scale
    return np.sqrt(np.float32(-2.0) * np.log(u1)) * np.cos(np.float32(2 * np.pi) * u2)
