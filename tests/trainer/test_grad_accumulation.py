"""Gradient accumulation (`grad_accumulation_steps`): N micro-batches make one optimizer step equal to
one step on their union, an overflow in any micro-batch skips the whole step, checkpoints hold no
accumulation buffers, and train.py counts epochs, the LR schedule and resume in optimizer steps."""
import glob
import os
import re

import pytest
import numpy as np
import mindspore as ms
from mindspore import nn
from PIL import Image

from conftest import REPO, run_script
from src.config import parse_args
from src.conformer import create_model_from_config
from src.kernels import kernels_in_use
from src.trainer.trainer import build_train_step, training_state

# the reduced variant at 32 px, nothing random in the network; momentum SGD, whose update scales with
# the gradient (AdamW's would hide a wrongly scaled sum); EMA on, clipping off (it would hide it too)
ARGS = ["--config", os.path.join(REPO, "src", "configs", "conformer_tiny.yaml"), "--device_target", "CPU",
        "--arch", "conformer_reduced_patch16", "--image_size", "32", "--num_classes", "4", "--drop_path", "0",
        "--optimizer", "momentum", "--base_lr", "0.05", "--lr_scheduler", "constant_lr", "--warmup_length", "0",
        "--weight_decay", "0.01", "--with_ema", "true", "--ema_decay", "0.5", "--use_clip_grad_norm", "false",
        "--loss_scale", "1024"]


def _step(accumulation: int, weights: dict):
    cfg = parse_args([*ARGS, "--grad_accumulation_steps", str(accumulation)])
    net = create_model_from_config(cfg)
    # the CPU default, own kernels with their bprops: a custom bprop once hung MindSpore's compiler when one
    # process built a plain and an accumulating step before compiling either (this test's combination)
    assert kernels_in_use(net)
    ms.load_param_into_net(net, {name: ms.Parameter(value.copy(), name=name) for name, value in weights.items()})
    step, _, ema = build_train_step(cfg, net, steps_per_epoch=10, rank_size=1)
    assert accumulation == 1 or step.grad_buffers.use_kernels  # the buffers' own kernels, as on CPU by default
    # BatchNorm on its running statistics: every sample is then computed on its own, so a batch of 8
    # and two micro-batches of 4 define the same loss (in training mode each micro-batch would be
    # normalised by its own statistics, as with PyTorch accumulation, and the two would differ)
    for _, cell in net.cells_and_names():
        if isinstance(cell, nn.BatchNorm2d):
            cell.set_train(False)
    return step, net, ema


def _state(net, ema):
    return {**{p.name: p.asnumpy().copy() for p in net.trainable_params()},
            **{f"ema.{name}": value for name, value in ema.state().items()}}


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_two_micro_batches_make_the_step_of_their_union_and_an_overflow_skips_it():
    rng = np.random.default_rng(0)
    images = [ms.Tensor(rng.standard_normal((4, 3, 32, 32)).astype(np.float32)) for _ in range(6)]
    targets = [ms.Tensor(np.eye(4, dtype=np.float32)[rng.permutation(4)]) for _ in range(6)]
    both = lambda i: (ms.Tensor(np.concatenate([images[i].asnumpy(), images[i + 1].asnumpy()])),  # noqa: E731
                      ms.Tensor(np.concatenate([targets[i].asnumpy(), targets[i + 1].asnumpy()])))
    cfg = parse_args(ARGS)
    start = {p.name: p.asnumpy() for p in create_model_from_config(cfg).get_parameters()}
    plain, plain_net, plain_ema = _step(1, start)
    micro, micro_net, micro_ema = _step(2, start)
    assert not [e for e in training_state(micro) if e["name"].startswith("accumulated")]
    assert len(training_state(micro)) == len(training_state(plain))

    for i in (0, 2):  # two optimizer steps: the buffers must be emptied after the first
        plain_loss, applied, _ = plain(*both(i))
        first = micro.accumulate(images[i], targets[i])
        second, micro_applied, _ = micro(images[i + 1], targets[i + 1])
        assert bool(applied.asnumpy()) and bool(micro_applied.asnumpy())
        np.testing.assert_allclose((first.asnumpy() + second.asnumpy()) / 2, plain_loss.asnumpy(), rtol=1e-5)
    expected, got = _state(plain_net, plain_ema), _state(micro_net, micro_ema)
    assert max(np.abs(expected[n] - start[n]).max() for n in start if n in expected) > 1e-3  # it moved
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert int(micro.optimizer.global_step.asnumpy()[0]) == 2  # counts optimizer steps, not micro-batches

    # an overflow in the first micro-batch: the whole step is skipped and leaves nothing behind
    micro.accumulate(ms.Tensor(np.full((4, 3, 32, 32), np.inf, np.float32)), targets[4])
    _, micro_applied, scale = micro(images[5], targets[5])
    assert not bool(micro_applied.asnumpy()) and float(scale.asnumpy()) == 512.0
    assert int(micro.skipped_steps.asnumpy()) == 1
    for name, value in _state(micro_net, micro_ema).items():
        np.testing.assert_array_equal(value, got[name], err_msg=name)
    micro.accumulate(images[0], targets[0])  # a step an epoch end cuts short: its gradients are dropped
    micro.discard_accumulated()
    plain(*both(4))
    micro.accumulate(images[4], targets[4])
    micro(images[5], targets[5])
    expected, got = _state(plain_net, plain_ema), _state(micro_net, micro_ema)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6, err_msg=name)


def _colour_folder(root):
    """7 train + 1 val images per class, each of one colour: crops leave them unchanged, so two runs
    see identical batches."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 7), ("val", 1)):
        for label in range(10):
            os.makedirs(root / split / str(label))
            for i in range(count):
                Image.new("RGB", (32, 32), tuple(int(c) for c in rng.integers(0, 256, 3))).save(
                    root / split / str(label) / f"{i}.png")
    return str(root)


@pytest.mark.e2e  # trains or compiles a full-size variant: long to compile
def test_train_py_counts_optimizer_steps_and_resumes_exactly(tmp_path):
    data = _colour_folder(tmp_path / "colours")  # 70 training images
    out = ["--ckpt_root_dir", str(tmp_path / "ckpt"), "--best_ckpt_root_dir", str(tmp_path / "best"),
           "--summary_root_dir", str(tmp_path / "summary")]
    args = [*ARGS, "--num_classes", "10", "--data_url", data, "--batch_size", "4", "--grad_accumulation_steps",
            "3", "--epochs", "2", "--repeated_aug", "0", "--auto_augment", "none", "--mixup", "0", "--cutmix", "0",
            "--re_prob", "0", "--print_loss_every", "1", "--ckpt_save_every_step", "4", "--num_parallel_workers",
            "2", "--with_ema", "false", "--lr_scheduler", "cosine_lr", *out]
    result = run_script("train.py", *args, compile_cache="accumulation")  # a resume compiles nothing else
    assert result.returncode == 0, result.stderr[-2000:]
    # 70 images = 17 batches of 4 = 5 optimizer steps of 3 micro-batches (2 batches left out)
    assert re.search(r"^epoch 1/2 step 5/5 loss [\d.]+ lr [\d.e+-]+ img/s [\d.]+ ", result.stdout, re.M)
    assert "step 6/" not in result.stdout
    newest = sorted(glob.glob(str(tmp_path / "ckpt" / "*.ckpt")))
    assert [p[-21:] for p in newest] == ["-e0001-s00000004.ckpt", "-e0001-s00000005.ckpt",
                                         "-e0002-s00000008.ckpt", "-e0002-s00000010.ckpt"]
    saved = ms.load_checkpoint(newest[2])
    assert int(saved["step_in_epoch"].asnumpy()) == 3 and not [n for n in saved if n.startswith("accumulated")]
    final = ms.load_checkpoint(newest[-1])

    resumed = run_script("train.py", *args, "--resume", newest[2], compile_cache="accumulation")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "epoch 2, step 4 (global step 8)" in resumed.stdout  # after optimizer step 3 of epoch 2
    again = ms.load_checkpoint(newest[-1])
    for name, value in final.items():  # the same batches in the same steps: the same weights
        if isinstance(value, str):  # the run's settings
            assert again[name] == value, name
        elif value.dtype == ms.float32:
            np.testing.assert_allclose(again[name].asnumpy(), value.asnumpy(), rtol=1e-5, atol=1e-6, err_msg=name)
