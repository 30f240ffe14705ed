"""Own CPU kernels (C++ in csrc/, run through ops.Custom AOT) for the ops whose MindSpore CPU
kernels are slow, and the cells that use them; GPU, Ascend and exported graphs keep MindSpore's ops
(src/kernels/switch.py)."""
from .layer_norm import LayerNorm  # noqa: F401
from .softmax import Softmax  # noqa: F401
from .transpose import Transpose  # noqa: F401
from .switch import KernelCell, kernels_in_use, set_cpu_kernels, set_plain_kernels  # noqa: F401
