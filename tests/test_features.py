"""create_model(features_only=True): multi-scale CNN maps and transformer tokens, official names kept."""
import numpy as np
import pytest
import mindspore as ms

from src.checkpoint import load_weights
from src.conformer import create_model


def _features(net, h, w):
    net.set_train(False)
    x = ms.Tensor(np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32))
    return [o.asnumpy() for o in net(x)]


def test_strides_channels_and_shapes_at_224_and_384(pynative):
    # depth 6 = two blocks per stage, so every feature exists (as at depth 12)
    net = create_model("conformer_reduced_patch16", depth=6, features_only=True)
    assert net.feature_strides == (4, 8, 16, 32, 16)
    assert net.feature_channels == (32, 64, 128, 128, 192)
    for size in (224, 384):
        shapes = [f.shape for f in _features(net, size, size)]
        expected = [(1, c, size // s, size // s) for c, s in zip(net.feature_channels[:4], net.feature_strides)]
        assert shapes == expected + [(1, 1 + (size // 16) ** 2, 192)]


def test_tiny_at_224_matches_the_documented_table(pynative):
    net = create_model("conformer_tiny_patch16", features_only=True, out_indices=(3, 0, 4))
    assert [f.shape for f in _features(net, 224, 224)] == [(1, 256, 7, 7), (1, 64, 56, 56), (1, 197, 384)]
    assert net.feature_strides == (32, 4, 16) and net.feature_channels == (256, 64, 384)


def test_features_are_the_classifier_s_maps_and_a_classifier_checkpoint_loads(tmp_path, pynative):
    full = create_model("conformer_reduced_patch16", num_classes=3)
    ckpt = str(tmp_path / "full.ckpt")
    ms.save_checkpoint(full, ckpt)
    features = create_model("conformer_reduced_patch16", features_only=True, out_indices=(3, 4, 1))
    names = set(features.parameters_dict())
    assert names == {n for n in full.parameters_dict()
                     if not n.startswith(("conv_cls_head.", "trans_cls_head.", "trans_norm."))}
    assert load_weights(features, ckpt) == []
    full.set_train(False)
    x = ms.Tensor(np.random.default_rng(1).standard_normal((2, 3, 64, 96)).astype(np.float32))
    maps, tokens = full.forward_blocks(x)
    features.set_train(False)
    got = [o.asnumpy() for o in features(x)]
    assert got[0].shape == (2, 128, 2, 3) and got[1].shape == (2, 1 + 4 * 6, 192)  # non-square input
    np.testing.assert_allclose(got[0], maps[-1].asnumpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[1], tokens.asnumpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[2], maps[1].asnumpy(), rtol=0, atol=1e-5)  # block 2 is stage 2
    assert got[2].shape == (2, 64, 8, 12)


def test_depth_3_has_no_stride_16_block_and_says_so():
    net = create_model("conformer_reduced_patch16", features_only=True)
    assert net.out_indices == (0, 1, 3, 4) and net.feature_strides == (4, 8, 32, 16)
    with pytest.raises(ValueError, match="out_indices: 2 is not a feature of this depth-3 model"):
        create_model("conformer_reduced_patch16", features_only=True, out_indices=(2,))
    with pytest.raises(ValueError, match="out_indices: 5 is not a feature"):
        create_model("conformer_reduced_patch16", depth=6, features_only=True, out_indices=(5,))
    with pytest.raises(ValueError, match="features_only"):
        create_model("conformer_reduced_patch16", out_indices=(0,))
