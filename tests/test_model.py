"""The model: official sizes and names, shapes at several resolutions, init, dropout wiring."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn

from src.conformer import (ALIASES, VARIANTS, canonical_arch, count_params, create_model, gmacs, gmacs_line,
                           list_models, param_count_line, variant_hparams)
from src.layers.drop_path import DropPath


OFFICIAL = [name for name, row in VARIANTS.items() if row.params is not None]


@pytest.mark.parametrize("arch", OFFICIAL)
def test_parameter_counts_equal_official(arch):
    net = create_model(arch)
    assert count_params(net) == VARIANTS[arch].params
    # 718 official state-dict entries minus the 85 num_batches_tracked buffers
    assert len(net.parameters_dict()) == 633


def test_start_up_line_compares_with_the_official_count_at_1000_classes():
    net = create_model("conformer_tiny_patch16", num_classes=10)
    line = param_count_line(net, "conformer_tiny")  # the alias names the same official model
    assert line == (f"arch conformer_tiny_patch16: {count_params(net):,} parameters at 10 classes "
                    "(23,524,704 at 1000 classes, as the official model)")
    overridden = create_model("conformer_tiny_patch16", num_classes=10, depth=3)
    at_1000 = count_params(create_model("conformer_tiny_patch16", depth=3))
    assert param_count_line(overridden, "conformer_tiny_patch16") == (
        f"warning: arch conformer_tiny_patch16: {count_params(overridden):,} parameters at 10 classes: "
        f"{at_1000:,} at 1000 classes, but the official conformer_tiny_patch16 has 23,524,704: "
        "this network is not the official variant")
    reduced = create_model("conformer_reduced_patch16", num_classes=4)
    assert param_count_line(reduced, "conformer_reduced_patch16").endswith("at 4 classes (not an official variant)")


def test_aliases_build_the_same_model():
    for alias, name in ALIASES.items():
        assert canonical_arch(alias) == name
    with pytest.raises(KeyError, match="unknown arch 'conformer_huge'"):
        create_model("conformer_huge")


def test_official_parameter_names():
    names = set(create_model("conformer_tiny_patch16").parameters_dict())
    for name in ["cls_token", "conv1.weight", "bn1.moving_variance", "conv_1.residual_bn.gamma",
                 "trans_patch_conv.bias", "trans_1.attn.qkv.weight", "trans_1.mlp.fc2.bias",
                 "conv_trans_2.squeeze_block.ln.beta", "conv_trans_2.expand_block.bn.moving_mean",
                 "conv_trans_5.cnn_block.residual_conv.weight", "conv_trans_12.fusion_block.residual_bn.gamma",
                 "conv_trans_12.trans_block.norm2.gamma", "trans_norm.beta", "trans_cls_head.weight",
                 "conv_cls_head.bias"]:
        assert name in names, name
    assert not any("stages" in n for n in names)
    assert "conv_trans_13.cnn_block.conv1.weight" not in names


def _forward(net, batch, size):
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32))
    return [o.asnumpy() for o in net(x)]


@pytest.mark.parametrize("size", [224, 160])
def test_tiny_output_shapes(size, pynative):
    conv, trans = _forward(create_model("conformer_tiny_patch16", num_classes=7), 1, size)
    assert conv.shape == (1, 7) and trans.shape == (1, 7)
    assert np.isfinite(conv).all() and np.isfinite(trans).all()


@pytest.mark.parametrize("arch,size", [("conformer_small_patch32", 64), ("conformer_reduced_patch16", 96)])
def test_other_variants_forward(arch, size, pynative):
    conv, trans = _forward(create_model(arch, num_classes=5), 2, size)
    assert conv.shape == (2, 5) and trans.shape == (2, 5)


def test_features_map_and_tokens_shapes(pynative):
    net = create_model("conformer_reduced_patch16", num_classes=3)
    net.set_train(False)
    x = ms.Tensor(np.zeros((2, 3, 64, 96), np.float32))
    fmap, tokens = net.forward_features(x)
    assert fmap.shape == (2, 32 * 4, 2, 3)  # stride 32, 4 x stage-1 width
    assert tokens.shape == (2, 1 + 4 * 6, 192)  # class token + (H/16)(W/16) patches


def test_head_api_is_the_two_dense_heads_on_the_embeddings():
    net = create_model("conformer_reduced_patch16", num_classes=3)
    net.set_train(False)
    conv_head, trans_head = net.get_classifier()
    assert [p.name for p in conv_head.get_parameters()] == ["conv_cls_head.weight", "conv_cls_head.bias"]
    assert [p.name for p in trans_head.get_parameters()] == ["trans_cls_head.weight", "trans_cls_head.bias"]
    embeddings = tuple(np.random.default_rng(0).standard_normal((2, n)).astype(np.float32)
                       for n in (conv_head.in_channels, trans_head.in_channels))
    logits = net.forward_head(tuple(ms.Tensor(e) for e in embeddings))
    for got, embedding, head in zip(logits, embeddings, (conv_head, trans_head)):
        by_hand = embedding @ head.weight.asnumpy().T + head.bias.asnumpy()
        np.testing.assert_allclose(got.asnumpy(), by_hand, rtol=1e-5, atol=1e-6)


def test_weight_init_is_official():
    net = create_model("conformer_tiny_patch16")
    params = net.parameters_dict()
    qkv = params["conv_trans_3.trans_block.attn.qkv.weight"].asnumpy()
    assert abs(qkv.std() - 0.02) < 0.001 and abs(qkv.mean()) < 0.001
    assert not params["conv_trans_3.trans_block.attn.qkv.bias"].asnumpy().any()
    assert abs(params["cls_token"].asnumpy().std() - 0.02) < 0.006
    conv = params["conv_trans_3.cnn_block.conv3.weight"].asnumpy()  # fan_out = out * 1 * 1
    # 4 standard errors of a sample std (relative 1/sqrt(2n)): the init is unseeded, and fan_in's std
    # (sqrt(2/16) here) would still be twice as far off
    expected = np.sqrt(2.0 / conv.shape[0])
    assert abs(conv.std() - expected) < 4 / np.sqrt(2 * conv.size) * expected
    assert (params["conv_trans_3.fusion_block.bn2.gamma"].asnumpy() == 1).all()
    assert (params["trans_norm.beta"].asnumpy() == 0).all()


def test_dropout_options_reach_their_layers():
    net = create_model("conformer_reduced_patch16", num_classes=3, drop_rate=0.1, attn_drop_rate=0.2,
                       drop_path_rate=0.3)
    block = net.conv_trans_3.trans_block
    assert block.attn.attn_drop.p == pytest.approx(0.2)
    assert block.attn.proj_drop.p == pytest.approx(0.1)
    assert block.mlp.drop.p == pytest.approx(0.1)
    # drop-path grows linearly from 0 (trans_1) to the given rate (last block)
    assert isinstance(net.trans_1.drop_path, nn.Identity)
    assert isinstance(block.drop_path, DropPath) and block.drop_path.keep_prob == pytest.approx(0.7)
    assert net.conv_trans_2.trans_block.drop_path.keep_prob == pytest.approx(0.85)


def test_drop_path_is_random_in_training_and_identity_in_eval():
    layer = DropPath(0.5)
    x = ms.Tensor(np.ones((64, 4), np.float32))
    layer.set_train(True)
    y = layer(x).asnumpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 10 < (y[:, 0] == 0).sum() < 54
    assert (y == y[:, :1]).all()  # one decision per sample
    layer.set_train(False)
    assert (layer(x).asnumpy() == 1).all()


def test_reduced_variant_is_marked_as_such():
    assert "conformer_reduced_patch16" in VARIANTS
    assert "conformer_reduced_patch16" not in OFFICIAL


def test_med_blocks_keep_official_names_and_run(pynative):
    net = create_model("conformer_reduced_patch16", num_classes=3, num_med_block=1)
    assert "conv_trans_2.med_block.0.conv2.weight" in net.parameters_dict()
    conv, trans = _forward(net, 1, 64)
    assert conv.shape == trans.shape == (1, 3)


def test_a_config_that_sets_only_arch_is_the_official_model(tmp_path, pynative):
    from src.config import parse_args
    from src.conformer import create_model_from_config
    path = tmp_path / "arch_only.yaml"
    path.write_text("arch: conformer_reduced_patch16\n")
    cfg = parse_args(["--config", str(path)])
    from_config = create_model_from_config(cfg)
    official = create_model("conformer_reduced_patch16", num_classes=cfg.num_classes)
    assert from_config.approximations == () == official.approximations
    modelzoo = create_model("conformer_reduced_patch16", num_classes=cfg.num_classes, approximate_gelu=True,
                            pytorch_maxpool=False)
    for net in (official, modelzoo):
        ms.load_param_into_net(net, from_config.parameters_dict())
    ours, theirs, approximated = (np.concatenate(_forward(net, 1, 64)) for net in (from_config, official, modelzoo))
    np.testing.assert_array_equal(ours, theirs)
    assert np.abs(approximated - theirs).max() > 1e-4  # the comparison can tell the numerics apart


def test_registry_lists_the_variants_and_the_readme_table_is_generated_from_it():
    import os
    from conftest import REPO
    from src.variants import markdown_table
    assert list_models() == sorted(VARIANTS) and len(list_models()) == 5
    assert list_models("*small*") == ["conformer_small_patch16", "conformer_small_patch32"]
    assert OFFICIAL == ["conformer_tiny_patch16", "conformer_small_patch16", "conformer_small_patch32",
                        "conformer_base_patch16"]
    readme = open(os.path.join(REPO, "README.md")).read()
    assert markdown_table() in readme, "README variant table is stale: python -m src.variants --markdown"


def test_computed_gmacs_reproduce_the_official_figures():
    official = {"conformer_tiny_patch16": "5.23", "conformer_small_patch16": "10.60",
                "conformer_small_patch32": "7.05", "conformer_base_patch16": "23.33"}
    assert {arch: f"{gmacs(arch):.2f}" for arch in OFFICIAL} == official
    assert gmacs_line("conformer_tiny", 384) == f"{gmacs('conformer_tiny_patch16', 384):.2f} GMACs at 384x384"
    # more than the pixel ratio: the attention products grow with the square of the tokens
    assert gmacs("conformer_tiny_patch16", 384) / gmacs("conformer_tiny_patch16") > (384 / 224) ** 2 + 0.2


@pytest.mark.parametrize("overrides", [{}, {"patch_size": 32, "num_med_block": 1}], ids=["p16", "p32_med"])
def test_mac_count_equals_a_walk_over_the_built_network(overrides):
    """Every Conv2d and Dense the forward pass calls, and each attention's two N x N products."""
    from src.layers.attention import Attention
    from src.variants import macs
    counted = []

    def layer(cell, inputs, output):
        per_output = cell.in_channels if isinstance(cell, nn.Dense) else \
            cell.in_channels // cell.group * cell.kernel_size[0] * cell.kernel_size[1]
        counted.append(int(np.prod(output.shape)) * per_output)

    def attention(cell, inputs, output):
        _, tokens, embed = inputs[0].shape
        counted.append(2 * tokens * tokens * embed)

    net = create_model("conformer_reduced_patch16", num_classes=7, **overrides)
    cells = [c for _, c in net.cells_and_names() if isinstance(c, (nn.Conv2d, nn.Dense, Attention))]
    handles = [c.register_forward_hook(attention if isinstance(c, Attention) else layer) for c in cells]
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)  # forward hooks run in PYNATIVE only
    try:
        _forward(net, 1, 64)
    finally:
        ms.set_context(mode=mode)
        for handle in handles:
            handle.remove()
    hparams = {**variant_hparams("conformer_reduced_patch16"), **overrides}
    assert sum(counted) == macs(hparams, image_size=64, num_classes=7, as_computed=True)
