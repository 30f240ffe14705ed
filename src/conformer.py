"""Conformer (Peng et al., ICCV 2021): a CNN branch and a transformer branch coupled by FCUs, with the
official implementation's parameter names and shapes so its checkpoints convert with a fixed rename
table.  `create_model` is the only way scripts build a network from a `VARIANTS` row
(src/variants.py): a classifier (`Conformer`) or, with `features_only=True`, a backbone
(`ConformerFeatures`: stride-4/8/16/32 CNN maps and the transformer tokens)."""
import numpy as np
import mindspore as ms
from mindspore import nn, ops
from mindspore.common.initializer import HeNormal, TruncatedNormal, initializer

from .kernels import LayerNorm, Transpose
from .layers.block import Block
from .layers.conv2d import conv2d
from .layers.conv_block import ConvBlock, batch_norm
from .layers.convtransblock import ConvTransBlock
from .layers.exportable_ops import TorchMaxPool2d, pad_to_multiple
from .checkpoint import load_weights
from .variants import (ALIASES, ARCH_NAMES, VARIANTS, canonical_arch, gmacs, gmacs_line,  # noqa: F401 (re-exported)
                       list_models, stage_blocks, variant_hparams)


class Conformer(nn.Cell):
    """images [B, 3, H, W] (any H, W >= 32) -> (conv_logits, trans_logits).

    As in mmpretrain, the stem's map is padded with zeros at the bottom/right to a multiple of the
    patch-embedding stride (patch_size / 4), so that the CNN branch's maps tile into the tokens at
    every stage; at multiples of 32 nothing is padded (the official code's numerics, op for op).
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 base_channel: int = 64, channel_ratio: float = 4, num_med_block: int = 0,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = False, qk_scale=None, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 approximate_gelu: bool = False, pytorch_maxpool: bool = True):
        super().__init__()
        if depth % 3:
            raise ValueError(f"depth must be a multiple of 3, got {depth}")
        if patch_size % 16:
            raise ValueError(f"patch_size must be a multiple of 16, got {patch_size}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        # the ModelZoo approximations in use (empty = the official numerics), for load_weights' warning
        self.approximations = tuple(name for name, on in (("disable_approximate_gelu: False", approximate_gelu),
                                                          ("use_pytorch_maxpool: False", not pytorch_maxpool)) if on)
        trans_dpr = np.linspace(0, drop_path_rate, depth).tolist()  # stochastic depth decay rule
        block_args = dict(num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                          approximate_gelu=approximate_gelu)

        self.cls_token = ms.Parameter(initializer(TruncatedNormal(0.02), (1, 1, embed_dim), ms.float32),
                                      name="cls_token")
        # stem: [B, 3, 224, 224] -> [B, 64, 56, 56]; this BN alone keeps torch's eps 1e-5
        self.conv1 = conv2d(in_chans, 64, 7, stride=2, padding=3)
        self.bn1 = batch_norm(64, eps=1e-5, relu=True)  # with act1
        self.maxpool = (TorchMaxPool2d(3, 2) if pytorch_maxpool
                        else nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same"))  # ModelZoo semantics

        stage_1_channel = int(base_channel * channel_ratio)
        trans_dw_stride = patch_size // 4
        self.trans_dw_stride = trans_dw_stride
        self.conv_1 = ConvBlock(64, stage_1_channel, res_conv=True, stride=1)
        self.trans_patch_conv = conv2d(64, embed_dim, trans_dw_stride, stride=trans_dw_stride, bias=True)
        self.patch_tokens = Transpose((0, 2, 3, 1))
        self.trans_1 = Block(embed_dim, drop=drop_rate, attn_drop=attn_drop_rate, drop_path=trans_dpr[0],
                             **block_args)
        stages = []
        for i, in_ch, out_ch, res_conv, stride, dw_stride, last_fusion in stage_blocks(
                depth, stage_1_channel, trans_dw_stride):
            block = ConvTransBlock(in_ch, out_ch, res_conv, stride, dw_stride, embed_dim,
                                   drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                                   drop_path_rate=trans_dpr[i - 1], last_fusion=last_fusion,
                                   num_med_block=num_med_block, **block_args)
            setattr(self, f"conv_trans_{i}", block)  # official names: conv_trans_2 ... conv_trans_12
            stages.append(block)
        self.stages = tuple(stages)  # a tuple of registered cells: iterable in graph mode, no new names

        self.trans_norm = LayerNorm(embed_dim, epsilon=1e-5)
        self.trans_cls_head = nn.Dense(embed_dim, num_classes)
        self.conv_cls_head = nn.Dense(stage_1_channel * 4, num_classes)
        self._init_weights()

    def _init_weights(self):
        """Official init: trunc-normal(0.02) Dense weights with zero bias, Kaiming-normal
        (fan_out, relu) conv weights; norms start at ones/zeros (MindSpore's defaults);
        conv biases keep the PyTorch-equivalent default uniform(+-1/sqrt(fan_in))."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, nn.Dense):
                cell.weight.set_data(initializer(TruncatedNormal(0.02), cell.weight.shape, cell.weight.dtype))
                cell.bias.set_data(initializer("zeros", cell.bias.shape, cell.bias.dtype))
            elif isinstance(cell, nn.Conv2d):
                cell.weight.set_data(initializer(HeNormal(mode="fan_out", nonlinearity="relu"),
                                                 cell.weight.shape, cell.weight.dtype))

    def forward_blocks(self, x):
        """images -> (CNN map after each block 1..depth, tokens after the last block [B, 1+n, E]).

        Block 1 is conv_1 + trans_1, block i > 1 is conv_trans_i; `feature_blocks`
        says which of these maps are the stride-4/8/16/32 features.
        """
        x_base = self.maxpool(self.bn1(self.conv1(x)))
        # both branches see the padded map (mmpretrain's auto_pad); shapes are static, so this is decided at compile
        x_base = pad_to_multiple(x_base, self.trans_dw_stride)
        x, _ = self.conv_1(x_base)
        x_t = self.trans_patch_conv(x_base)
        _, e, h, w = x_t.shape
        x_t = self.patch_tokens(x_t).reshape(-1, h * w, e)  # as FCUDown: the order onnxruntime fuses best
        # x_t[:, :1] * 0 ties the class token's batch to the input instead of a constant
        x_t = self.trans_1(ops.cat((x_t[:, :1] * 0 + self.cls_token, x_t), axis=1))
        maps = (x,)
        for stage in self.stages:
            x, x_t = stage(x, x_t)
            maps += (x,)
        return maps, x_t

    def forward_features(self, x):
        """images -> (CNN map of the last stage [B, C, ceil(H/32), ceil(W/32)], tokens [B, 1+n, E]).

        The tokens are before `trans_norm` (the transformer head applies it).
        """
        maps, x_t = self.forward_blocks(x)
        return maps[-1], x_t

    def forward_embeddings(self, x):
        """images -> (pooled CNN feature [B, 4C], class token after trans_norm [B, E]): the heads' inputs."""
        x, x_t = self.forward_features(x)
        return x.mean(axis=(2, 3)), self.trans_norm(x_t)[:, 0]

    def forward_head(self, embeddings):
        """`forward_embeddings`' output -> (conv_logits, trans_logits).

        Unlike timm's `forward_head`, pooling and trans_norm are not part of it: the embeddings are an
        output of their own (`--features`), so a caller needing both runs the heads on them.
        """
        conv_features, trans_features = embeddings
        return self.conv_cls_head(conv_features), self.trans_cls_head(trans_features)

    def get_classifier(self) -> tuple:
        """(conv head, transformer head): the two nn.Dense classifiers, as timm's `get_classifier`."""
        return self.conv_cls_head, self.trans_cls_head

    def construct(self, x):
        return self.forward_head(self.forward_embeddings(x))


FEATURE_INDICES = (0, 1, 2, 3, 4)  # stride-4/8/16/32 CNN maps, then the transformer tokens


def feature_blocks(depth: int) -> tuple:
    """Block (1..depth, as in `forward_blocks`) whose CNN map is feature 0, 1, 2, 3; 0 = none.

    Ends of stage 1 and 2, then the last block at stride 16 and the last block,
    whose fusion bottleneck halves the map: blocks 4, 8, 11, 12 at depth 12, the
    maps the official mmdetection backbone returns.  With one block per stage
    (depth 3) no block ends at stride 16.
    """
    per_stage = depth // 3
    return per_stage, 2 * per_stage, depth - 1 if per_stage > 1 else 0, depth


class ConformerFeatures(Conformer):
    """Conformer as a backbone (timm/mindcv `features_only`): images -> the outputs in `out_indices`.

    | index | output | stride | channels | tiny, 224 x 224 |
    | --- | --- | --- | --- | --- |
    | 0 | CNN map, end of stage 1 (conv_trans_4) | 4 | C | [B, 64, 56, 56] |
    | 1 | CNN map, end of stage 2 (conv_trans_8) | 8 | 2C | [B, 128, 28, 28] |
    | 2 | CNN map of conv_trans_11, the last block at stride 16 | 16 | 4C | [B, 256, 14, 14] |
    | 3 | CNN map of conv_trans_12, the last block (its fusion halves the map) | 32 | 4C | [B, 256, 7, 7] |
    | 4 | transformer tokens after the last block, class token first, before trans_norm | patch | E | [B, 197, 384] |

    C = 64 x channel_ratio (64 tiny, 256 small, 384 base), E = embed_dim; an H x W
    input gives 1 + ceil(H/p) ceil(W/p) tokens for patch size p, and maps [B, c, H', W']
    with H' = (p/s) ceil(H/p) for strides s <= p, ceil(H/32) for stride 32 (H/s at
    multiples of 32; otherwise the stem's map was padded, see `Conformer`).  Block
    numbers are for depth 12 (see `feature_blocks`).
    `feature_strides` / `feature_channels` describe the selected outputs (for a
    neck).  The classifier heads and `trans_norm` are removed; every other
    parameter keeps its official name, so classification checkpoints load with
    `load_weights` (which ignores the heads' entries).
    """

    def __init__(self, out_indices=None, patch_size: int = 16, base_channel: int = 64,
                 channel_ratio: float = 4, **kwargs):
        super().__init__(patch_size=patch_size, base_channel=base_channel, channel_ratio=channel_ratio, **kwargs)
        del self.trans_norm, self.trans_cls_head, self.conv_cls_head
        depth = len(self.stages) + 1
        blocks = feature_blocks(depth) + (None,)  # None: the tokens
        available = tuple(i for i in FEATURE_INDICES if blocks[i] != 0)
        out_indices = available if out_indices is None else tuple(out_indices)
        for i in out_indices:
            if i not in available:
                reason = " (one block per stage: no block ends at stride 16)" if i == 2 else ""
                raise ValueError(f"out_indices: {i} is not a feature of this depth-{depth} model{reason}; "
                                 f"available: {', '.join(map(str, available))}")
        stage_1_channel = int(base_channel * channel_ratio)
        strides = (4, 8, 16, 32, patch_size)
        channels = (stage_1_channel, 2 * stage_1_channel, 4 * stage_1_channel, 4 * stage_1_channel, self.embed_dim)
        self.out_indices = out_indices
        self.feature_strides = tuple(strides[i] for i in out_indices)
        self.feature_channels = tuple(channels[i] for i in out_indices)
        # index into forward_blocks' maps (block b is maps[b - 1]); None: the tokens
        self._taps = tuple(None if blocks[i] is None else blocks[i] - 1 for i in out_indices)

    def construct(self, x):
        maps, x_t = self.forward_blocks(x)
        out = ()
        for tap in self._taps:
            out += (x_t,) if tap is None else (maps[tap],)
        return out


def create_model(arch: str, num_classes: int = 1000, drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, approximate_gelu: bool = False, pytorch_maxpool: bool = True,
                 features_only: bool = False, out_indices=None, pretrained: str = "", **overrides) -> Conformer:
    """Build a registered variant; `overrides` replace its hyper-parameters (None is ignored).

    features_only=True returns a `ConformerFeatures` backbone whose call returns
    the outputs `out_indices` selects (default: every one the depth has).
    pretrained=PATH loads its weights strictly from a .ckpt, a .safetensors or an official /
    mmpretrain .pth (`load_weights`; CheckpointError names the file and what does not fit).
    """
    hparams = variant_hparams(arch)
    hparams.update({k: v for k, v in overrides.items() if v is not None})
    kwargs = dict(num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                  attn_drop_rate=attn_drop_rate, approximate_gelu=approximate_gelu,
                  pytorch_maxpool=pytorch_maxpool, **hparams)
    if features_only:
        net = ConformerFeatures(out_indices=out_indices, **kwargs)
    elif out_indices is not None:
        raise ValueError("out_indices selects the outputs of features_only=True models")
    else:
        net = Conformer(**kwargs)
    if pretrained:
        load_weights(net, pretrained)
    return net


def count_params(net: nn.Cell) -> int:
    """Trainable parameters, the figure the official code reports."""
    return sum(int(np.prod(p.shape)) for p in net.trainable_params())


def param_count_line(net: Conformer, arch: str) -> str:
    """The start-up line of every script: arch, parameter count, and the official count.

    The registry's official counts are at 1000 classes, so the count is compared at 1000
    classes: each class costs one weight row and one bias in each head.  A
    mismatch (the network is not the official variant) gives a line starting
    with "warning:" that names both numbers.
    """
    arch = canonical_arch(arch)
    n_params, classes = count_params(net), net.num_classes
    text = f"arch {arch}: {n_params:,} parameters at {classes} classes"
    official = VARIANTS[arch].params
    if official is None:
        return f"{text} (not an official variant)"
    per_class = sum(head.in_channels + 1 for head in net.get_classifier())
    at_1000 = n_params + (1000 - classes) * per_class
    if at_1000 == official:
        return f"{text} ({at_1000:,} at 1000 classes, as the official model)"
    return (f"warning: {text}: {at_1000:,} at 1000 classes, but the official {arch} has {official:,}: "
            "this network is not the official variant")


def create_model_from_config(cfg) -> Conformer:
    """The model a config describes (the YAML keys keep their ModelZoo names)."""
    return create_model(cfg.arch, num_classes=cfg.num_classes, drop_rate=cfg.drop,
                        drop_path_rate=cfg.drop_path, attn_drop_rate=cfg.drop_block,
                        approximate_gelu=not cfg.disable_approximate_gelu,
                        pytorch_maxpool=cfg.use_pytorch_maxpool)
