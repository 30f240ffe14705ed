"""Bottleneck of the CNN branch (official `ConvBlock`), plus the BN helper it shares."""
from mindspore import nn

from src.kernels.batch_norm import BatchNorm2d
from .conv2d import conv2d
from ..variants import EXPANSION  # shared with the MAC count


def batch_norm(channels: int, eps: float = 1e-6, relu: bool = False) -> BatchNorm2d:
    """BatchNorm2d, with `relu` followed by the official code's ReLU (`act*`); the official code uses
    eps 1e-6 everywhere but the stem (1e-5).

    MindSpore's momentum is the weight of the running value (0.9 == torch's 0.1); on CPU it runs the
    own kernels (src/kernels/batch_norm.py), BatchNorm and ReLU as one.
    """
    return BatchNorm2d(channels, eps=eps, momentum=0.9, relu=relu)


class ConvBlock(nn.Cell):
    """1x1 -> 3x3(stride) -> 1x1 bottleneck with residual.

    construct(x, x_t=None) -> (out, x2): `x_t` is the FCU-up map added to the
    3x3 conv's input (fusion block); `x2` is the 3x3 conv's activation, which
    FCU-down turns into tokens.  The official ConvBlock accepts a drop_path but
    ConvTransBlock never passes one, so the CNN branch has no stochastic depth:
    kept that way on purpose, for fidelity.
    """

    def __init__(self, inplanes: int, outplanes: int, stride: int = 1, res_conv: bool = False, groups: int = 1):
        super().__init__()
        med_planes = outplanes // EXPANSION
        self.conv1 = conv2d(inplanes, med_planes, 1)
        self.bn1 = batch_norm(med_planes, relu=True)  # with act1
        self.conv2 = conv2d(med_planes, med_planes, 3, stride=stride, padding=1, groups=groups)
        self.bn2 = batch_norm(med_planes, relu=True)  # with act2
        self.conv3 = conv2d(med_planes, outplanes, 1)
        self.bn3 = batch_norm(outplanes)
        self.act3 = nn.ReLU()
        self.res_conv = res_conv
        if res_conv:
            self.residual_conv = conv2d(inplanes, outplanes, 1, stride=stride)
            self.residual_bn = batch_norm(outplanes)

    def construct(self, x, x_t=None):
        residual = x
        x = self.bn1(self.conv1(x))
        if x_t is not None:
            x = x + x_t
        x2 = self.bn2(self.conv2(x))
        x = self.bn3(self.conv3(x2))
        if self.res_conv:
            residual = self.residual_bn(self.residual_conv(residual))
        return self.act3(x + residual), x2
