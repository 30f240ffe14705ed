"""Extra bottleneck between the FCUs (official `Med_ConvBlock`, `num_med_block` per stage).

Same layers and names as ConvBlock at constant width; only the feature map is returned.
No official variant uses it (num_med_block=0), but official checkpoints of custom
models may, so the names are kept.
"""
from .conv_block import ConvBlock


class MedConvBlock(ConvBlock):
    def __init__(self, inplanes: int, groups: int = 1):
        super().__init__(inplanes, inplanes, groups=groups)

    def construct(self, x):
        return ConvBlock.construct(self, x)[0]
