"""One Conformer stage block (official `ConvTransBlock`), as in the paper's Figure 2.

CNN bottleneck -> FCU-down -> transformer block -> FCU-up -> fusion bottleneck.
"""
from mindspore import nn

from .block import Block
from .conv_block import EXPANSION, ConvBlock
from .fcu import FCUDown, FCUUp
from .med_convblock import MedConvBlock


class ConvTransBlock(nn.Cell):
    """(map [B, Cin, H, W], tokens [B, 1+n, E]) -> (map [B, Cout, H/stride', W/stride'], tokens)."""

    def __init__(self, inplanes: int, outplanes: int, res_conv: bool, stride: int, dw_stride: int,
                 embed_dim: int, num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale=None, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, last_fusion: bool = False, num_med_block: int = 0,
                 groups: int = 1, approximate_gelu: bool = False):
        super().__init__()
        self.cnn_block = ConvBlock(inplanes, outplanes, stride=stride, res_conv=res_conv, groups=groups)
        # the last block of the network halves the map once more (7x7 at 224)
        self.fusion_block = ConvBlock(outplanes, outplanes, stride=2 if last_fusion else 1,
                                      res_conv=last_fusion, groups=groups)
        self.num_med_block = num_med_block
        if num_med_block > 0:
            self.med_block = nn.CellList([MedConvBlock(outplanes, groups) for _ in range(num_med_block)])
        self.squeeze_block = FCUDown(outplanes // EXPANSION, embed_dim, dw_stride, approximate_gelu)
        self.expand_block = FCUUp(embed_dim, outplanes // EXPANSION, dw_stride)
        self.trans_block = Block(embed_dim, num_heads, mlp_ratio, qkv_bias, qk_scale, drop_rate,
                                 attn_drop_rate, drop_path_rate, approximate_gelu)
        self.dw_stride = dw_stride

    def construct(self, x, x_t):
        x, x2 = self.cnn_block(x)
        _, _, h, w = x2.shape
        # FCU-down's tokens carry x_t's class token, so the sum doubles it (as official)
        x_t = self.trans_block(self.squeeze_block(x2, x_t), x_t)
        if self.num_med_block > 0:
            for med in self.med_block:
                x = med(x)
        x_t_r = self.expand_block(x_t, h // self.dw_stride, w // self.dw_stride)
        x, _ = self.fusion_block(x, x_t_r)
        return x, x_t
