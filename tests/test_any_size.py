"""Inputs whose sides are not multiples of 32: the outputs equal mmpretrain's, which pads the stem's map.

The reference (tests/fixtures/fidelity/mmpretrain_any_size.npz, regenerate with
make_any_size_fixture.py) is mmpretrain's classifier run on the fidelity fixture's
weights at 241 x 241 and 321 x 221 (patch 16) and 241 x 241 (patch 32).
"""
import json
import os

import numpy as np
import pytest
import mindspore as ms

from test_fidelity import FIDELITY, build_from_fixture
from src.conformer import create_model
from src.layers.exportable_ops import pad_to_multiple

REFERENCE = np.load(os.path.join(FIDELITY, "mmpretrain_any_size.npz"))
CASES = json.loads(str(REFERENCE["cases_json"]))


class _Embeddings(ms.nn.Cell):
    """images -> (conv_logits, trans_logits, conv_features, trans_features), one forward pass."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        conv, trans = self.net.forward_embeddings(x)
        return self.net.conv_cls_head(conv), self.net.trans_cls_head(trans), conv, trans


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_outputs_equal_mmpretrain_at_sizes_not_multiple_of_32(case, pynative):
    net, _, _ = build_from_fixture(case["weights"])
    x = np.random.RandomState(case["seed"]).standard_normal(case["shape"]).astype(np.float32)
    got = [o.asnumpy() for o in _Embeddings(net)(ms.Tensor(x))]
    for key, value in zip(("conv_logits", "trans_logits", "conv_features", "trans_features"), got):
        expected = REFERENCE[f"{case['name']}_{key}"]
        assert value.shape == expected.shape, key
        err = np.abs(value - expected).max() / max(1.0, np.abs(expected).max())
        # float rounding, as at multiples of 32 in test_fidelity.py (the measured error: docs/weights.md)
        assert err < 2e-5, f"{case['name']} {key}: max error {err:.2e} relative to the output's scale"


def test_pad_is_zeros_at_bottom_right_and_absent_at_multiples():
    x = ms.Tensor(np.arange(2 * 3 * 5 * 6, dtype=np.float32).reshape(2, 3, 5, 6) + 1)
    padded = pad_to_multiple(x, 4).asnumpy()
    assert padded.shape == (2, 3, 8, 8)
    np.testing.assert_array_equal(padded[:, :, :5, :6], x.asnumpy())
    assert not padded[:, :, 5:].any() and not padded[:, :, :, 6:].any()
    whole = ms.Tensor(np.ones((1, 2, 8, 12), np.float32))
    assert pad_to_multiple(whole, 4) is whole  # at multiples of 32 the graph has no pad op at all


def test_small_odd_input_runs_forward_and_backward(pynative):
    """Nearly the smallest size: a 33 x 47 input's 9 x 12 stem map padded by 7 x 4 for patch 32 (graph-mode
    training at 40 px: test_curves.py)."""
    ms.set_seed(0)
    net = create_model("conformer_reduced_patch16", num_classes=3, patch_size=32)
    x = ms.Tensor(np.random.RandomState(0).standard_normal((2, 3, 33, 47)).astype(np.float32))
    _, x_t = net.forward_features(x)
    assert x_t.shape[1] == 1 + 2 * 2  # ceil(33/32) x ceil(47/32) patches and the class token

    def loss(images):
        c, t = net(images)
        return (c.sum() + t.sum()) / 2
    grads = ms.grad(loss, grad_position=None, weights=net.trainable_params())(x)
    assert all(np.isfinite(g.asnumpy()).all() for g in grads)
    by_name = dict(zip((p.name for p in net.trainable_params()), grads))
    # both branches' first convolutions, which read the padded stem map, learn
    assert np.abs(by_name["trans_patch_conv.weight"].asnumpy()).sum() > 0
    assert np.abs(by_name["conv_1.conv1.weight"].asnumpy()).sum() > 0


def test_features_only_maps_follow_the_padded_stem_map():
    """81 x 50: stem map 21 x 13 padded to 24 x 16, so (p/s) ceil(H/p) rows at strides 4 and 8, ceil(H/32) at 32."""
    net = create_model("conformer_reduced_patch16", features_only=True)
    net.set_train(False)
    x = ms.Tensor(np.random.RandomState(1).standard_normal((1, 3, 81, 50)).astype(np.float32))
    shapes = [o.shape for o in net(x)]
    assert net.feature_strides == (4, 8, 32, 16)
    assert shapes == [(1, 32, 24, 16), (1, 64, 12, 8), (1, 128, 3, 2), (1, 1 + 6 * 4, 192)]
