"""Weights in any format (.ckpt, .safetensors, .pth converted in memory), EMA weights, amp_level and
flip TTA at evaluation (src/checkpoint.py, src/inference/network.py, src/inference/tta.py), through the library and the scripts."""
import ast
import json
import os
import re
import zipfile

import numpy as np
import pytest
import mindspore as ms

from conftest import FIXTURES, run_script
from datasets import write_digits_folder
from torch_zip_writer import write_official_pth
from test_eval import ARGS, _by_hand
from test_integrity import flip_one_byte
from src.conformer import create_model
from src.checkpoint import (CheckpointError, load_weights, read_checkpoint, save_checkpoint_atomic,
                                  weights_format)
from src.inference.network import inference_network, numpy_forward
from src.inference.tta import flip_tta
from src.trainer.ema import EMA

ARCH = "conformer_reduced_patch16"
RESULT = re.compile(r"eval results: (\{.*\})$")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One seeded 10-class net written as .ckpt, .safetensors and an official-format .pth."""
    ms.set_seed(3)
    np.random.seed(3)
    net = create_model(ARCH, num_classes=10)
    root = tmp_path_factory.mktemp("weights")
    paths = {fmt: str(root / f"model.{fmt}") for fmt in ("ckpt", "safetensors", "pth")}
    save_checkpoint_atomic(net, paths["ckpt"])
    save_checkpoint_atomic(net, paths["safetensors"])
    write_official_pth(net, paths["pth"])
    return net, paths


@pytest.fixture(scope="module")
def images():
    return ms.Tensor(np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32))


def _logits(net, images):
    net.set_train(False)
    return [o.asnumpy() for o in net(images)]


def test_the_same_weights_from_ckpt_safetensors_and_pth_give_identical_outputs(weights, images):
    net, paths = weights
    assert {fmt: weights_format(path) for fmt, path in paths.items()} == {
        "ckpt": "ckpt", "safetensors": "safetensors", "pth": "torch"}
    # one network loaded in turn (a forward pass compiles once per network)
    target = create_model(ARCH, num_classes=10)
    outputs = {"fresh": _logits(target, images)}
    for fmt, path in paths.items():
        load_weights(target, path)
        outputs[fmt] = _logits(target, images)
    for fmt in ("safetensors", "pth"):
        for got, want in zip(outputs[fmt], outputs["ckpt"]):
            np.testing.assert_array_equal(got, want, err_msg=fmt)
    assert np.abs(outputs["fresh"][0] - outputs["ckpt"][0]).max() > 1e-3  # loading changed the outputs
    source = {p.name: p.asnumpy() for p in net.get_parameters()}
    # create_model(pretrained=...) with each format; a features_only backbone takes the classifier's .pth
    # (its heads and trans_norm are not unknown keys there)
    for built in [create_model(ARCH, num_classes=10, pretrained=path) for path in paths.values()] + [
            create_model(ARCH, features_only=True, pretrained=paths["pth"])]:
        for p in built.get_parameters():
            np.testing.assert_array_equal(p.asnumpy(), source[p.name], err_msg=p.name)


def test_safetensors_is_mindspore_s_layout_with_its_crc_and_readable_by_the_safetensors_package(weights, tmp_path):
    net, paths = weights
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    arrays = safetensors_numpy.load_file(paths["safetensors"])
    assert sorted(arrays) == sorted(p.name for p in net.get_parameters())
    for p in net.get_parameters():
        np.testing.assert_array_equal(arrays[p.name], p.asnumpy())
    # MindSpore verifies the CRC we wrote; a converted file's origin is metadata, where strings belong
    path = str(tmp_path / "converted.safetensors")
    save_checkpoint_atomic(net, path, append_dict={"converted_from": "mmpretrain", "epoch": 7})
    loaded = ms.load_checkpoint(path, format="safetensors", crc_check=True)
    assert int(loaded["epoch"].asnumpy()) == 7
    assert read_checkpoint(path)["converted_from"] == "mmpretrain"
    flip_one_byte(paths["safetensors"], tmp_path / "flipped.safetensors")
    with pytest.raises(CheckpointError, match=r"flipped\.safetensors: damaged: its CRC32 does not match"):
        load_weights(create_model(ARCH, num_classes=10), str(tmp_path / "flipped.safetensors"))


def test_a_pth_gets_convert_py_s_checks_and_warning(weights, tmp_path, capsys):
    _, paths = weights
    net = create_model(ARCH, num_classes=10)
    other_arch = os.path.join(FIXTURES, "fidelity", "official_p16.pth")
    with pytest.raises(CheckpointError, match=r"official_p16\.pth: shape mismatch at 'cls_token'"):
        load_weights(net, other_arch)
    extra = tmp_path / "extra.pth"
    from src.convert.torch_checkpoint import load_torch_checkpoint
    from torch_zip_writer import write_torch_zip
    state = load_torch_checkpoint(paths["pth"])["model"]
    write_torch_zip({"model": {**state, "head.fc.weight": np.zeros((2, 2), np.float32)}}, str(extra))
    with pytest.raises(CheckpointError, match=r"extra\.pth: unexpected key 'head\.fc\.weight'"):
        load_weights(net, str(extra))
    # fine-tuning: heads of another size are re-initialised, as from a .ckpt
    assert sorted(load_weights(create_model(ARCH, num_classes=4), paths["pth"], skip_mismatched_head=True)) == [
        "conv_cls_head.bias", "conv_cls_head.weight", "trans_cls_head.bias", "trans_cls_head.weight"]
    capsys.readouterr()
    load_weights(create_model(ARCH, num_classes=10, approximate_gelu=True), paths["pth"])
    assert capsys.readouterr().err.startswith(f"warning: {paths['pth']} holds weights converted from the official "
                                              "model, but this network uses the ModelZoo approximations")


def test_unknown_or_damaged_files_are_one_line_naming_the_file(weights, tmp_path):
    _, paths = weights
    net = create_model(ARCH, num_classes=10)
    cases = {"weights.bin": (b"\x07" * 64, "weights.bin: not a weights file: expected a MindSpore .ckpt, "
                                           "a .safetensors file or a PyTorch .pth/.pt/.pth.tar"),
             "garbage.safetensors": (b"\x07" * 64, "garbage.safetensors: not a readable safetensors file"),
             "garbage.ckpt": (b"\x07" * 64, "garbage.ckpt: not a readable MindSpore checkpoint"),
             "truncated.pth": (open(paths["pth"], "rb").read()[:500], "truncated.pth"),
             "renamed.ckpt": (open(paths["safetensors"], "rb").read(), "renamed.ckpt: is a safetensors file: "
                                                                       "name it *.safetensors")}
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as error:
            load_weights(net, str(tmp_path / name))
        assert message in str(error.value) and "\n" not in str(error.value), (name, str(error.value))
    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nq\x00.")
    with pytest.raises(CheckpointError, match="system"):
        load_weights(net, str(evil))
    assert weights_format(os.path.join(FIXTURES, "torch_ckpt", "ckpt_legacy.pt")) == "torch"  # torch < 1.6
    # a safetensors header length whose first byte is a pickle's 0x80 is still safetensors
    from safetensors.numpy import save_file
    odd = str(tmp_path / "odd.safetensors")
    for pad in range(256):
        save_file({"w": np.zeros(2, np.float32)}, odd, metadata={"pad": "x" * pad})
        if open(odd, "rb").read(1) == b"\x80":
            break
    assert open(odd, "rb").read(1) == b"\x80" and weights_format(odd) == "safetensors"
    # a .pth renamed .ckpt is recognised by its content
    renamed = tmp_path / "pth_named.ckpt"
    renamed.write_bytes(open(paths["pth"], "rb").read())
    load_weights(net, str(renamed))


def test_flip_tta_is_the_mean_of_the_two_passes(weights, images):
    net, _ = weights
    plain = _logits(net, images)
    mirrored = _logits(net, ms.Tensor(images.asnumpy()[..., ::-1].copy()))
    tta = flip_tta(numpy_forward(net, len(images)))(images.asnumpy())
    for got, a, b in zip(tta, plain, mirrored):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=0, atol=1e-6)
    assert np.abs(tta[0] - plain[0]).max() > 1e-4


def test_amp_level_evaluates_close_to_float32_on_cpu(weights, images):
    """O1 here (O2 through eval.py below; every level trains on CPU, tests/trainer/test_train.py)."""
    net, paths = weights
    reference = _logits(net, images)
    amp = _logits(inference_network(create_model(ARCH, num_classes=10, pretrained=paths["ckpt"]), "O1"), images)
    for got, want in zip(amp, reference):
        assert got.dtype == np.float32
        difference = np.abs(got - want).max()
        assert 0 < difference < 1e-2 * max(1.0, np.abs(want).max()), difference  # float16 ran, and stayed close


class _MeanOfFlips:
    """The flip average computed as two separate passes, for _by_hand."""

    def __init__(self, net):
        self.net = net

    def set_train(self, mode):
        self.net.set_train(mode)

    def __call__(self, x):
        a = [o.asnumpy() for o in self.net(x)]
        b = [o.asnumpy() for o in self.net(ms.Tensor(x.asnumpy()[..., ::-1].copy()))]
        return tuple(ms.Tensor((p + q) / 2) for p, q in zip(a, b))


def _training_checkpoint(path):
    """A checkpoint as train.py writes it with EMA on: weights, their `ema.` shadows (which differ), a position.
    Returns (net with the raw weights, net with the EMA weights)."""
    ms.set_seed(5)
    np.random.seed(5)
    net = create_model(ARCH, num_classes=10)
    ema = EMA(net.get_parameters(), decay=0.5)
    trained = create_model(ARCH, num_classes=10)  # other weights: the shadows now lag behind them
    for p, q in zip(net.get_parameters(), trained.get_parameters()):
        p.set_data(q.data.copy())
    ema()
    save_checkpoint_atomic([{"name": p.name, "data": p} for p in net.get_parameters()]
                           + [{"name": s.name, "data": s} for s in ema.shadows], path,
                           append_dict={"epoch": 1, "step_in_epoch": 0})
    ema_net = create_model(ARCH, num_classes=10)
    not_loaded, _ = ms.load_param_into_net(ema_net, {s.name[len("ema."):]: ms.Parameter(s.asnumpy(), name=s.name)
                                                     for s in ema.shadows})
    assert not not_loaded
    return net, ema_net


def _summed(result):
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(RESULT.match(result.stdout.splitlines()[1]).group(1))


@pytest.mark.e2e
def test_eval_scripts_take_every_format_ema_amp_and_tta(weights, tmp_path):
    net, paths = weights
    data = write_digits_folder(tmp_path / "digits", train_per_class=1, val_per_class=3)
    val = os.path.join(data, "val")
    training = str(tmp_path / "train_state.ckpt")
    raw_net, ema_net = _training_checkpoint(training)

    # --use_ema --tta flip: the EMA weights, averaged over the mirror, as two passes by hand give
    results = tmp_path / "ema.json"
    summed = _summed(run_script("eval.py", *ARGS, "--data_url", data, "--checkpoint", training, "--use_ema",
                                "--tta", "flip", "--results_file", str(results)))
    top1, top5, loss, _ = _by_hand(_MeanOfFlips(ema_net), val)
    raw_loss, ema_plain_loss = _by_hand(raw_net, val)[2], _by_hand(ema_net, val)[2]
    assert min(abs(raw_loss - loss), abs(ema_plain_loss - loss)) > 2e-3  # what is compared can tell them apart
    written = json.loads(results.read_text())["summed"]
    assert abs(written["loss"] - loss) < 1e-5 and written["top1"] == top1 and written["top5"] == top5
    assert summed["Top1-Acc"] == round(top1, 6)

    # --amp_level O2 with a .pth: float16 ran and stayed close to the float32 result
    results = tmp_path / "amp.json"
    _summed(run_script("eval.py", *ARGS, "--data_url", data, "--pretrained", paths["pth"], "--amp_level", "O2",
                       "--results_file", str(results)))
    amp_loss, fp32_loss = json.loads(results.read_text())["summed"]["loss"], _by_hand(net, val)[2]
    assert 0 < abs(amp_loss - fp32_loss) < 1e-2

    # --use_ema without EMA weights: one line
    result = run_script("eval.py", *ARGS, "--data_url", data, "--checkpoint", paths["safetensors"], "--use_ema")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == (f"eval.py: error: {paths['safetensors']}: has no EMA weights (ema.* entries): --use_ema "
                        "reads a training checkpoint (ckpt_root_dir) of a run with with_ema: True; best checkpoints "
                        "already hold the EMA weights")


def test_resuming_needs_a_training_checkpoint(weights):
    """train.py prints this CheckpointError as its one line (tests/trainer/test_train.py shows the printing)."""
    from src.trainer.trainer import read_training_checkpoint
    _, paths = weights
    for fmt, name in (("safetensors", "safetensors"), ("pth", "torch")):
        with pytest.raises(CheckpointError) as error:
            read_training_checkpoint(paths[fmt])
        assert str(error.value) == (f"{paths[fmt]}: resuming needs a training checkpoint (a .ckpt written by "
                                    f"train.py: optimizer state, EMA, position); a {name} file holds weights only: "
                                    "use --pretrained")
    assert "conv1.weight" in read_training_checkpoint(paths["ckpt"])


@pytest.mark.e2e
def test_convert_writes_safetensors(weights, tmp_path):
    net, paths = weights
    out = tmp_path / "out" / "model.safetensors"
    result = run_script("convert.py", "--src", paths["pth"], "--arch", ARCH, "--out", str(out))
    assert result.returncode == 0, result.stderr
    loaded = ms.load_checkpoint(str(out), format="safetensors", crc_check=True)
    target = create_model(ARCH, num_classes=10)
    not_loaded, unused = ms.load_param_into_net(target, loaded)
    assert not not_loaded and unused == []
    for p in net.get_parameters():
        np.testing.assert_array_equal(target.parameters_dict()[p.name].asnumpy(), p.asnumpy())
    assert read_checkpoint(str(out))["converted_from"] == "official"
    assert os.listdir(out.parent) == ["model.safetensors"]  # no temp file left
