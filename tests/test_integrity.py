"""Checkpoints carry MindSpore's CRC32: a flipped byte is refused in one line naming the file by every
entry point that reads one (eval, infer, export, resume), and checkpoints written without a CRC
(before it, or by other tools) still load."""
import os

import numpy as np
import pytest
import mindspore as ms

from conftest import REPO, run_script
from datasets import write_digits_folder
from src.checkpoint import CheckpointError, load_weights, read_checkpoint, save_checkpoint_atomic
from src.conformer import create_model

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARCH = "conformer_reduced_patch16"
CONFIG = os.path.join(REPO, "src", "configs", "conformer_tiny.yaml")
MODEL = ["--arch", ARCH, "--num_classes", "10", "--device_target", "CPU", "--image_size", "32"]


def flip_one_byte(source, target):
    """A copy of `source` with one bit changed in the middle (inside a parameter's values)."""
    data = bytearray(open(source, "rb").read())
    data[len(data) // 2] ^= 0x10
    with open(target, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    net = create_model(ARCH, num_classes=10)
    good, damaged = str(root / "good.ckpt"), str(root / "damaged.ckpt")
    save_checkpoint_atomic(net, good, append_dict={"epoch": 0, "step_in_epoch": 1})
    flip_one_byte(good, damaged)
    return {"net": net, "good": good, "damaged": damaged, "root": root}


def test_the_crc_is_what_catches_a_flipped_byte(checkpoints):
    # without the check the damaged file loads, with different values: nothing else would notice
    unchecked = ms.load_checkpoint(checkpoints["damaged"])
    good = read_checkpoint(checkpoints["good"])
    assert any(not np.array_equal(unchecked[k].asnumpy(), good[k].asnumpy()) for k in good)
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt: damaged: its CRC32 does not match"):
        read_checkpoint(checkpoints["damaged"])


def test_checkpoints_without_a_crc_still_load_without_a_warning(checkpoints, tmp_path, capfd):
    net = checkpoints["net"]
    old = str(tmp_path / "old.ckpt")
    ms.save_checkpoint(net, old)  # as checkpoints were written before they carried a CRC
    assert open(old, "rb").read()[-17:-10] != b"crc_num"
    assert open(checkpoints["good"], "rb").read()[-17:-10] == b"crc_num"
    capfd.readouterr()
    fresh = create_model(ARCH, num_classes=10)
    assert load_weights(fresh, old) == []
    for p in net.get_parameters():
        np.testing.assert_array_equal(fresh.parameters_dict()[p.name].asnumpy(), p.asnumpy())
    assert "WARNING" not in capfd.readouterr().err


def _refused(result, path):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}: damaged: its CRC32 does not match" in lines[0], result.stderr[-2000:]


def test_every_entry_point_refuses_a_damaged_checkpoint(checkpoints, tmp_path):
    damaged = checkpoints["damaged"]
    before = open(damaged, "rb").read()
    data = write_digits_folder(tmp_path / "digits", train_per_class=2, val_per_class=1)
    image = os.path.join(data, "val", "0", sorted(os.listdir(os.path.join(data, "val", "0")))[0])
    common = ["--config", CONFIG, *MODEL]
    _refused(run_script("eval.py", *common, "--data_url", data, "--pretrained", damaged), damaged)
    _refused(run_script("infer.py", image, "--checkpoint", damaged, *MODEL, "--output", str(tmp_path / "p.json")),
             damaged)
    _refused(run_script("export.py", *common, "--pretrained", damaged, "--file_format", "ONNX",
                        "--output", str(tmp_path / "m.onnx")), damaged)
    outputs = [a for key in ("ckpt_root_dir", "best_ckpt_root_dir", "summary_root_dir")
               for a in (f"--{key}", str(tmp_path / key))]
    _refused(run_script("train.py", *common, "--data_url", data, "--checkpoint", damaged, "--epochs", "1",
                        "--batch_size", "4", "--num_parallel_workers", "1", "--repeated_aug", "0", *outputs), damaged)
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "m.onnx").exists()
    assert open(damaged, "rb").read() == before  # refused, not "repaired" or removed
