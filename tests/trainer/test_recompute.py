"""Activation recomputation (`recompute`): the same training step as without it, and random ops kept out
of it (a recomputed drop-path would draw another mask for the backward pass)."""
import os

import pytest
import numpy as np
import mindspore as ms
from mindspore import nn, ops

from conftest import REPO
from src.config import parse_args
from src.conformer import create_model_from_config
from src.kernels import kernels_in_use
from src.layers.convtransblock import ConvTransBlock
from src.layers.drop_path import DropPath
from src.trainer.recompute import recompute_blocks, recompute_without_randomness
from src.trainer.trainer import build_train_step

# plain SGD with lr 1: the update of a step is minus its gradient
ARGS = ["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"), "--device_target", "CPU",
        "--arch", "conformer_reduced_patch16", "--image_size", "32", "--num_classes", "4", "--drop_path", "0",
        "--optimizer", "momentum", "--momentum", "0", "--base_lr", "1", "--lr_scheduler", "constant_lr",
        "--warmup_length", "0", "--weight_decay", "0", "--with_ema", "false", "--use_clip_grad_norm", "false",
        "--is_dynamic_loss_scale", "false", "--loss_scale", "1"]


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_a_recomputed_step_has_the_same_loss_and_gradients():
    rng = np.random.default_rng(0)
    images = ms.Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    targets = ms.Tensor(np.eye(4, dtype=np.float32))
    start = None
    results = []
    for recompute in ("false", "true"):
        net = create_model_from_config(parse_args(ARGS))
        assert kernels_in_use(net)  # the CPU default: recomputed blocks call the own kernels again
        if start is None:
            start = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
        ms.load_param_into_net(net, {n: ms.Parameter(v.copy(), name=n) for n, v in start.items()})
        step, _, _ = build_train_step(parse_args([*ARGS, "--recompute", recompute]), net, 10, 1)
        loss, applied, _ = step(images, targets)
        assert bool(applied.asnumpy())
        results.append((float(loss.asnumpy()), {p.name: start[p.name] - p.asnumpy() for p in net.trainable_params()}))
    (loss, grads), (loss_rc, grads_rc) = results
    assert abs(loss_rc - loss) <= 1e-5 * abs(loss)
    assert max(np.abs(g).max() for g in grads.values()) > 1e-3
    for name, grad in grads.items():
        np.testing.assert_allclose(grads_rc[name], grad, rtol=1e-5, atol=1e-5, err_msg=name)


def test_whole_blocks_are_recomputed_unless_they_hold_a_random_op():
    net = create_model_from_config(parse_args(ARGS))
    marked = recompute_blocks(net)
    assert [type(c).__name__ for c in marked] == ["ConvBlock", "Block", "ConvTransBlock", "ConvTransBlock"]
    net = create_model_from_config(parse_args([*ARGS, "--drop_path", "0.1"]))  # a DropPath in each stage
    marked = recompute_blocks(net)
    assert not [c for c in marked for _, inner in c.cells_and_names() if isinstance(inner, DropPath)]
    assert not [c for c in marked if isinstance(c, ConvTransBlock)]
    names = {name.split(".")[-1] for name, cell in net.cells_and_names() if cell in marked}
    assert {"cnn_block", "fusion_block", "squeeze_block", "expand_block", "attn", "mlp"} <= names


class _DropSquare(nn.Cell):
    """x -> drop_path(x * w) ** 2: with w = 1 the gradient w.r.t. w is twice the loss exactly when the
    backward pass sees the forward pass's mask."""

    def __init__(self):
        super().__init__()
        self.w = ms.Parameter(ms.Tensor(np.ones(1, np.float32)), name="w")
        self.drop_path = DropPath(0.5)

    def construct(self, x):
        dropped = self.drop_path(x * self.w)
        return dropped * dropped


class _Sum(nn.Cell):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def construct(self, x):
        return ops.sum(self.inner(x))


def _mask_consistent(inner) -> bool:
    net = _Sum(inner)
    net.set_train(True)
    grad_fn = ms.value_and_grad(net, None, net.trainable_params())
    x = ms.Tensor(np.arange(1, 33, dtype=np.float32).reshape(32, 1))  # one distinct value per sample
    checks = []
    for _ in range(3):
        loss, (grad,) = grad_fn(x)
        checks.append(abs(float(grad.asnumpy()[0]) - 2 * float(loss.asnumpy())) <= 1e-4 * float(loss.asnumpy()))
    return all(checks)


def test_drop_path_keeps_its_forward_mask():
    kept = _DropSquare()
    assert [type(c).__name__ for c in recompute_without_randomness(kept)] == []  # its only child is random
    # The converse (a DropSquare recomputed whole sees another mask in its backward pass) was observed
    # when run alone but not in the full suite (it depends on MindSpore's RNG state), so it is not asserted.
    assert _mask_consistent(kept)
