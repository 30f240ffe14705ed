"""The network as eval.py and infer.py run it: under the training's `amp_level`, and with
`tta: flip` averaged over the image and its horizontal mirror.

The onnxruntime scripts' flip is `flip_tta` in src/deploy/inference.py (MindSpore-free).
"""
from mindspore import nn, ops

from src.trainer.trainer import mixed_precision


class FlipTTA(nn.Cell):
    """images -> each head's logits averaged over the images and their mirrors (W flipped).

    Each head is averaged, so their sum -- the prediction -- is the average of the summed logits.
    """

    def __init__(self, net: nn.Cell):
        super().__init__(auto_prefix=False)  # wrapping must not rename the network's parameters
        self.net = net

    def construct(self, images):
        conv, trans = self.net(images)
        conv_flipped, trans_flipped = self.net(ops.flip(images, (3,)))
        return (conv + conv_flipped) / 2, (trans + trans_flipped) / 2


def inference_network(net: nn.Cell, amp_level: str = "O0", tta: str = "") -> nn.Cell:
    """`net` (weights loaded) in eval mode, under `amp_level` as train.py applies it, flip-averaged
    with tta='flip'."""
    net = mixed_precision(net, amp_level)
    if tta == "flip":
        net = FlipTTA(net)
    net.set_train(False)
    return net
