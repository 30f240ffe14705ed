"""The network as eval.py, infer.py, export.py and validation run it: the summed heads (and optionally
each head and the embeddings) as the graph's outputs, in eval mode under the training's `amp_level`,
and as a NumPy function at one batch size."""
import numpy as np
import mindspore as ms
from mindspore import nn

from src.inference.amp import mixed_precision
from src.inference.batch_padding import pad_to_batch


class InferenceNet(nn.Cell):
    """images -> summed logits (the official inference output); with_heads adds both heads' logits,
    with_features the embeddings: the pooled CNN feature [B, 4C] and the class token after trans_norm
    [B, E] (the two heads' inputs)."""

    def __init__(self, net: nn.Cell, with_heads: bool = False, with_features: bool = False):
        super().__init__()
        self.net = net
        self.with_heads = with_heads
        self.with_features = with_features

    def construct(self, images):
        if not self.with_features:
            conv_logits, trans_logits = self.net(images)
            logits = conv_logits + trans_logits
            if self.with_heads:
                return logits, conv_logits, trans_logits
            return logits
        conv_features, trans_features = embeddings = self.net.forward_embeddings(images)
        conv_logits, trans_logits = self.net.forward_head(embeddings)
        logits = conv_logits + trans_logits
        if self.with_heads:
            return logits, conv_logits, trans_logits, conv_features, trans_features
        return logits, conv_features, trans_features


def inference_network(net: nn.Cell, amp_level: str = "O0") -> nn.Cell:
    """`net` (weights loaded) in eval mode, under `amp_level` as train.py applies it."""
    net = mixed_precision(net, amp_level)
    net.set_train(False)
    return net


def _float32(output: ms.Tensor) -> np.ndarray:
    return output.asnumpy().astype(np.float32, copy=False)  # under amp_level an output may be float16


def numpy_forward(net, batch_size: int):
    """`forward(images [B, ...] numpy) -> net's outputs as float32 numpy (a tuple, or one array)`, always
    run at `batch_size` rows (src/inference/batch_padding.py: GRAPH mode compiles once)."""
    def forward(images):
        outputs = net(ms.Tensor(images))
        return tuple(map(_float32, outputs)) if isinstance(outputs, tuple) else _float32(outputs)
    return pad_to_batch(forward, batch_size)
