"""Feature Coupling Units: the bridges between the CNN and transformer branches."""
from mindspore import nn, ops

from src.kernels import LayerNorm, Transpose
from .conv2d import conv2d
from .conv_block import batch_norm
from .exportable_ops import GELU, upsample_nearest


class FCUDown(nn.Cell):
    """CNN map [B, C, H, W] -> tokens [B, 1 + (H/s)(W/s), E], class token taken from x_t.

    1x1 conv to the embedding width, s x s average pooling, LayerNorm (eps 1e-6), GELU. The pooling
    runs first: a 1x1 convolution (with its bias) and an average commute, so the result is the
    official one up to float rounding, while the convolution sees s x s fewer positions and neither
    pass builds the E-channel map at full resolution.
    """

    def __init__(self, inplanes: int, outplanes: int, dw_stride: int, approximate_gelu: bool = False):
        super().__init__()
        self.dw_stride = dw_stride
        self.conv_project = conv2d(inplanes, outplanes, 1, bias=True)
        self.sample_pooling = nn.AvgPool2d(kernel_size=dw_stride, stride=dw_stride)
        self.ln = LayerNorm(outplanes, epsilon=1e-6)
        self.act = GELU(approximate_gelu)
        self.channels_last = Transpose((0, 2, 3, 1))

    def construct(self, x, x_t):
        x = self.conv_project(self.sample_pooling(x))
        _, c, h, w = x.shape
        # channels last, then flatten: in an exported graph onnxruntime folds this transpose into its
        # NCHWc reorder and keeps the LayerNorm on the last axis, where it fuses (flatten-then-transpose
        # gets the transpose pushed past the LayerNorm, which then runs as 7 separate ops)
        x = self.channels_last(x).reshape(-1, h * w, c)
        x = self.act(self.ln(x))
        return ops.cat((x_t[:, :1], x), axis=1)


class FCUUp(nn.Cell):
    """Tokens [B, 1 + h*w, E] -> CNN map [B, C, h*s, w*s]; the class token is dropped.

    1x1 conv, BatchNorm (eps 1e-6), ReLU, nearest upsampling by s (as the official
    F.interpolate default; the ModelZoo-era ports' bilinear is not what was trained).
    """

    def __init__(self, inplanes: int, outplanes: int, up_stride: int):
        super().__init__()
        self.up_stride = up_stride
        self.conv_project = conv2d(inplanes, outplanes, 1, bias=True)
        self.bn = batch_norm(outplanes, relu=True)  # with the official `act`
        self.channels_first = Transpose((0, 3, 1, 2))

    def construct(self, x, h: int, w: int):
        c = x.shape[2]
        x = self.channels_first(x[:, 1:].reshape(-1, h, w, c))  # a channels-last input onnxruntime's reorder takes
        x = self.bn(self.conv_project(x))
        return upsample_nearest(x, self.up_stride)
