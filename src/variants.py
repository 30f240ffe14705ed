"""The Conformer variants, one registry row each: hyper-parameters, official size, paper accuracy, and
`macs` counting a variant's forward multiply-accumulates from its shapes.  Plain data, no MindSpore:
the config schema takes its `arch` choices from here; src/conformer.py builds the networks.
`python -m src.variants --markdown` prints the variant table of README.md."""
import fnmatch
import sys
from dataclasses import dataclass
from typing import Optional

COMMON = dict(depth=12, mlp_ratio=4.0, qkv_bias=True)
EXPANSION = 4  # bottleneck width = output channels / 4, as ResNet (the official ConvBlock's `expansion`)


@dataclass(frozen=True)
class Variant:
    hparams: dict  # what differs from COMMON
    params: Optional[int] = None  # official parameter count at 1000 classes; None: not an official model
    top1: str = ""  # ImageNet-1k top-1 (%), with its source when it is not the paper
    alias: str = ""  # the ModelZoo name
    note: str = ""


VARIANTS = {
    "conformer_tiny_patch16": Variant(dict(patch_size=16, channel_ratio=1, embed_dim=384, num_heads=6),
                                      params=23_524_704, top1="81.3", alias="conformer_tiny"),
    "conformer_small_patch16": Variant(dict(patch_size=16, channel_ratio=4, embed_dim=384, num_heads=6),
                                       params=37_673_424, top1="83.4", alias="conformer_small"),
    "conformer_small_patch32": Variant(dict(patch_size=32, channel_ratio=4, embed_dim=384, num_heads=6),
                                       params=38_853_072, top1="81.96 (mmpretrain)"),
    "conformer_base_patch16": Variant(dict(patch_size=16, channel_ratio=6, embed_dim=576, num_heads=9),
                                      params=83_289_136, top1="84.1", alias="conformer_base"),
    "conformer_reduced_patch16": Variant(dict(patch_size=16, channel_ratio=0.5, embed_dim=192, num_heads=3, depth=3),
                                         note="not an official model: depth 3, embed 192, for tests and the CPU demo"),
}
ALIASES = {row.alias: name for name, row in VARIANTS.items() if row.alias}
ARCH_NAMES = tuple(VARIANTS) + tuple(ALIASES)


def list_models(pattern: str = "*") -> list:
    """Sorted names of the registered variants matching a shell-style pattern (timm's list_models)."""
    return sorted(name for name in VARIANTS if fnmatch.fnmatch(name, pattern))


def canonical_arch(arch: str) -> str:
    """Resolve a ModelZoo alias; unknown names raise a one-line KeyError."""
    name = ALIASES.get(arch, arch)
    if name not in VARIANTS:
        raise KeyError(f"unknown arch {arch!r}; known: {', '.join(ARCH_NAMES)}")
    return name


def variant_hparams(arch: str) -> dict:
    """The Conformer constructor's hyper-parameters of a variant (alias accepted)."""
    return {**COMMON, **VARIANTS[canonical_arch(arch)].hparams}


def stage_blocks(depth: int, stage_1_channel: int, trans_dw_stride: int):
    """(index, in_ch, out_ch, res_conv, stride, dw_stride, last_fusion) of conv_trans_2..depth.

    Three stages of depth/3 blocks each (block 1 is conv_1 + trans_1); every stage
    doubles the CNN width, halves the map, and halves the FCU stride.
    """
    per_stage = depth // 3
    for i in range(2, depth + 1):
        stage = (i - 1) // per_stage
        out_ch = stage_1_channel * 2 ** stage
        first_of_new_stage = stage > 0 and i == stage * per_stage + 1
        in_ch = out_ch // 2 if first_of_new_stage else out_ch
        yield (i, in_ch, out_ch, first_of_new_stage, 2 if first_of_new_stage else 1,
               trans_dw_stride // 2 ** stage, i == depth)


def macs(hparams: dict, image_size: int = 224, num_classes: int = 1000, as_computed: bool = False) -> int:
    """Forward multiply-accumulates of one S x S image: every convolution and linear layer and the
    attention products q @ k^T and attn @ v (fvcore's convention, which gives the official figures);
    norms, activations, pooling and additions are not counted. `as_computed`: the FCU-down convolution
    after its pooling, as this network runs it (src/layers/fcu.py), rather than the official order."""
    hp = {**COMMON, "num_med_block": 0, "base_channel": 64, **hparams}
    embed, mlp_hidden = hp["embed_dim"], int(hp["embed_dim"] * hp["mlp_ratio"])
    total = 0

    def conv(cin, cout, k, size):  # size: the output's side
        nonlocal total
        total += cin * cout * k * k * size * size

    def bottleneck(cin, cout, stride, res_conv, size):  # ConvBlock; returns the output's side
        med, out = cout // EXPANSION, -(-size // stride)
        conv(cin, med, 1, size)
        conv(med, med, 3, out)
        conv(med, cout, 1, out)
        if res_conv:
            conv(cin, cout, 1, out)
        return out

    def transformer(tokens):  # Block: qkv, q @ k^T, attn @ v, proj, MLP
        nonlocal total
        total += tokens * embed * (3 * embed + embed + 2 * mlp_hidden) + 2 * tokens * tokens * embed

    size = -(-image_size // 2)  # ceil: the stem's convolution and max-pool pad by half their kernel
    conv(hp.get("in_chans", 3), 64, 7, size)  # stem, then the stride-2 max-pool
    size = -(-size // 2)
    stage_1_channel = int(hp["base_channel"] * hp["channel_ratio"])
    dw_stride = hp["patch_size"] // 4
    size = -(-size // dw_stride) * dw_stride  # the zero padding to whole patches (none at multiples of 32)
    tokens = 1 + (size // dw_stride) ** 2
    x_size = bottleneck(64, stage_1_channel, 1, True, size)  # conv_1
    conv(64, embed, dw_stride, size // dw_stride)  # trans_patch_conv
    transformer(tokens)  # trans_1
    for _, cin, cout, res_conv, stride, dw, last_fusion in stage_blocks(hp["depth"], stage_1_channel, dw_stride):
        map_size = bottleneck(cin, cout, stride, res_conv, x_size)  # cnn_block
        conv(cout // EXPANSION, embed, 1, map_size // dw if as_computed else map_size)  # FCU down
        transformer(tokens)
        for _ in range(hp["num_med_block"]):
            bottleneck(cout, cout, 1, False, map_size)
        conv(embed, cout // EXPANSION, 1, map_size // dw)  # FCU up, before its upsampling
        x_size = bottleneck(cout, cout, 2 if last_fusion else 1, last_fusion, map_size)  # fusion_block
    total += (stage_1_channel * EXPANSION + embed) * num_classes  # the two heads
    return total


def gmacs(arch: str, image_size: int = 224, num_classes: int = 1000) -> float:
    """Forward GMACs of one image of a registered variant."""
    return macs(variant_hparams(arch), image_size, num_classes) / 1e9


def gmacs_line(arch: str, image_size: int = 224, num_classes: int = 1000) -> str:
    return f"{gmacs(arch, image_size, num_classes):.2f} GMACs at {image_size}x{image_size}"


def markdown_table() -> str:
    """The variant table of README.md, from the registry (GMACs computed at 224)."""
    rows = ["| arch (ModelZoo alias) | params | GMACs @224 | ImageNet top-1 (paper) |", "| --- | --- | --- | --- |"]
    for name, row in VARIANTS.items():
        label = f"`{name}`" + (f" (`{row.alias}`)" if row.alias else "")
        if row.params is None:
            rows.append(f"| {label} | ({row.note}) | {gmacs(name):.2f} | |")
        else:
            rows.append(f"| {label} | {row.params:,} | {gmacs(name):.2f} | {row.top1} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown_table())
    else:
        for name in VARIANTS:
            print(f"{name}: {gmacs_line(name)}")
