"""Outputs from converted official (and mmpretrain) weights equal the PyTorch reference.

The fixture (tests/fixtures/fidelity, regenerate with make_fidelity_fixture.py)
holds reduced-width, full-depth models built with the official classes and with
mmpretrain's, every norm parameter and BN statistic perturbed, an input and
both heads' eval-mode logits computed by PyTorch.
"""
import json
import os

import numpy as np
import pytest
import mindspore as ms

from conftest import FIXTURES
from src.conformer import Conformer
from src.convert.state_dict import convert_state_dict, unwrap_state_dict
from src.convert.torch_checkpoint import load_torch_checkpoint

FIDELITY = os.path.join(FIXTURES, "fidelity")


def _official_hparams(h):
    """Constructor arguments of the official class; mmpretrain fixtures record their own config."""
    if "backbone" not in h:
        return h
    backbone, arch = h["backbone"], h["backbone"]["arch"]
    return dict(patch_size=backbone["patch_size"], base_channel=backbone["base_channels"],
                channel_ratio=arch["channel_ratio"], embed_dim=arch["embed_dims"], depth=arch["depths"],
                num_heads=arch["num_heads"], qkv_bias=backbone["qkv_bias"], num_classes=h["head"]["num_classes"])


def build_from_fixture(name):
    """(MindSpore net with the fixture's converted weights, reference npz, source format)."""
    ref = np.load(os.path.join(FIDELITY, f"{name}.npz"))
    net = Conformer(**_official_hparams(json.loads(str(ref["hparams_json"]))))
    state_dict, source = unwrap_state_dict(load_torch_checkpoint(os.path.join(FIDELITY, f"{name}.pth")))
    params = convert_state_dict(state_dict, {p.name: p.shape for p in net.get_parameters()})
    not_loaded, unused = ms.load_param_into_net(net, {k: ms.Parameter(v, name=k) for k, v in params.items()})
    assert not not_loaded and not unused
    net.set_train(False)
    return net, ref, source


@pytest.fixture(scope="module")
def built():
    """build_from_fixture, once per fixture name: a net compiles its forward pass once for the file."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = build_from_fixture(name)
        return cache[name]
    return get


@pytest.mark.parametrize("name,source", [("official_p16", "official"), ("official_p32", "official"),
                                         ("mmpretrain_p16", "mmpretrain")])
@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_logits_match_pytorch(built, name, source):
    net, ref, found_source = built(name)
    assert found_source == source
    conv, trans = (o.asnumpy() for o in net(ms.Tensor(ref["input"])))
    # the fixture's logits are O(1); 1e-4 absolute is the bound
    np.testing.assert_allclose(conv, ref["conv_logits"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(trans, ref["trans_logits"], rtol=0, atol=1e-4)


def test_fixture_is_sensitive_to_a_wrong_mapping(built):
    """Swapping two same-shaped BN biases must break the match, or the test above proves nothing."""
    net, ref, _ = built("official_p16")
    params = net.parameters_dict()
    a, b = params["conv_trans_12.fusion_block.bn1.beta"], params["conv_trans_12.fusion_block.bn2.beta"]
    a_val, b_val = a.asnumpy().copy(), b.asnumpy().copy()
    a.set_data(ms.Tensor(b_val))
    b.set_data(ms.Tensor(a_val))
    try:
        conv, _ = (o.asnumpy() for o in net(ms.Tensor(ref["input"])))
    finally:  # the shared net gets its converted weights back
        a.set_data(ms.Tensor(a_val))
        b.set_data(ms.Tensor(b_val))
    assert np.abs(conv - ref["conv_logits"]).max() > 1e-3
