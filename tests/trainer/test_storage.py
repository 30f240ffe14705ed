"""Storage faults: a full disk or a read-only folder while writing a checkpoint, best.json, the metrics,
predictions or an export gives one line naming the file and the cause, leaves no temp file, and the
previous complete file untouched. The disks are real: small tmpfs mounts (root only, else skipped)."""
import json
import os
import subprocess
from contextlib import contextmanager

import numpy as np
import pytest
import mindspore as ms

from conftest import run_script
from datasets import write_digits_folder
from src.checkpoint import read_checkpoint, save_checkpoint_atomic
from src.config import parse_args
from src.conformer import create_model
from src.io import TEMP_PREFIX, WriteError
from src.trainer.checkpoint_keeper import CheckpointKeeper
from src.trainer.logs import MetricsLog
from src.trainer.trainer import build_train_step, training_state
from datasets import NO_AUGMENT, SMALL

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARCH = "conformer_reduced_patch16"


@contextmanager
def small_disk(folder, size_bytes):
    """A tmpfs of `size_bytes` mounted at `folder`; yields a remount(read_only) function."""
    os.makedirs(folder, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and tmpfs mounts to make a small disk")

    def read_only():
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    try:
        yield read_only
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def _no_temp_files(folder):
    assert not [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX) or n.endswith(".tmp")], os.listdir(folder)


def _one_line(result, prog, *fragments):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: cannot write "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_training_on_a_full_disk_stops_and_names_the_last_complete_checkpoint(tmp_path):
    data = write_digits_folder(tmp_path / "digits", train_per_class=4, val_per_class=1)
    args = [*SMALL, "--data_url", data, "--batch_size", "8", "--epochs", "1", *NO_AUGMENT, "--with_ema", "false",
            "--ckpt_save_every_step", "2", "--ckpt_keep_num", "1", "--print_loss_every", "1",
            "--best_ckpt_root_dir", str(tmp_path / "best"), "--summary_root_dir", str(tmp_path / "summary")]
    # the size of one training checkpoint of this setup; the disk holds one and a half
    cfg = parse_args(args)
    step, _, _ = build_train_step(cfg, create_model(ARCH, num_classes=10), steps_per_epoch=5, rank_size=1)
    save_checkpoint_atomic(training_state(step), str(tmp_path / "probe.ckpt"),
                           append_dict={"epoch": 0, "step_in_epoch": 0, "seed": 0})
    disk = tmp_path / "disk"
    with small_disk(disk, int(os.path.getsize(tmp_path / "probe.ckpt") * 1.5)):
        result = run_script("train.py", *args, "--ckpt_root_dir", str(disk))
        first, second = (str(disk / f"{ARCH}_0-e0001-s{s:08d}.ckpt") for s in (2, 4))
        _one_line(result, "train.py", f"cannot write {second}: No space left on device "
                                      f"(the last complete checkpoint, {first}, is untouched)")
        assert os.listdir(disk) == [os.path.basename(first)]  # and no temp file
        assert int(read_checkpoint(first)["global_step"].asnumpy()[0]) == 2  # complete: its CRC holds
        assert "epoch 1/1 step 4/5" in result.stdout and "step 5/5" not in result.stdout  # it stopped there


def test_best_checkpoints_and_best_json_survive_a_full_disk(tmp_path):
    net = create_model(ARCH, num_classes=10)
    weights = [{"name": p.name, "data": p.value()} for p in net.get_parameters()]
    save_checkpoint_atomic(weights, str(tmp_path / "probe.ckpt"))
    disk = tmp_path / "disk"
    with small_disk(disk, int(os.path.getsize(tmp_path / "probe.ckpt") * 1.5)):
        keeper = CheckpointKeeper(str(tmp_path / "ckpt"), str(disk), "p", keep=1, best_num=1)
        kept = keeper.offer_best(weights, 0.5, epoch=0)
        index = (disk / "best.json").read_text()
        with pytest.raises(WriteError) as error:
            keeper.offer_best(weights, 0.6, epoch=1)  # would displace the first, once written
        assert str(error.value) == (f"cannot write {disk}/p-best-e0002-top1-0.6000.ckpt: No space left on device "
                                    "(the earlier best checkpoints and best.json are untouched)")
        assert (disk / "best.json").read_text() == index and json.loads(index) == {kept: 0.5}
        assert sorted(os.listdir(disk)) == ["best.json", os.path.basename(kept)]
        read_checkpoint(kept)


def test_metrics_in_a_read_only_folder_name_the_file_and_keep_the_earlier_rows(tmp_path):
    disk = tmp_path / "summary"
    row = {"epoch": 1, "global_step": 5, "train_loss": 1.0, "val_loss": 1.0, "summed_top1": 0.1, "conv_top1": 0.1,
           "transformer_top1": 0.1}
    with small_disk(disk, 1 << 20) as read_only:
        log = MetricsLog(str(disk))
        log.append(row)
        before = (disk / "metrics.csv").read_text()
        read_only()
        with pytest.raises(WriteError, match=rf"^cannot write {disk}/metrics.csv: Read-only file system$"):
            log.append(dict(row, epoch=2))
        assert (disk / "metrics.csv").read_text() == before
        _no_temp_files(disk)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    from src.deploy.export import export_model
    from src.inference.network import InferenceNet
    root = tmp_path_factory.mktemp("model")
    net = create_model(ARCH, num_classes=4)
    ckpt = str(root / "reduced.ckpt")
    save_checkpoint_atomic(net, ckpt)
    onnx_path = export_model(InferenceNet(net), ms.Tensor(np.zeros((1, 3, 32, 32), np.float32)),
                             str(root / "reduced.onnx"), "ONNX")
    return ckpt, onnx_path


def test_predictions_and_exports_name_the_file_they_cannot_write(model_files, tmp_path):
    ckpt, onnx_path = model_files
    image = tmp_path / "img.png"
    from PIL import Image
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    small = ["--device_target", "CPU", "--image_size", "32"]
    disk = tmp_path / "disk"
    with small_disk(disk, 1 << 20) as read_only:  # 1 MB: less than the exported model
        export = run_script("export.py", "--config", SMALL[1], "--arch", ARCH, "--num_classes", "4", *small,
                            "--pretrained", ckpt, "--file_format", "ONNX", "--output", str(disk / "m.onnx"))
        _one_line(export, "export.py", f"cannot write {disk}/m.onnx: No space left on device")
        assert os.listdir(disk) == []
        (disk / "p.json").write_text('{"earlier": 1}\n')
        read_only()
        infer = run_script("infer_onnx.py", str(image), "--onnx_path", onnx_path, *small, "--output",
                           str(disk / "p.json"))
        _one_line(infer, "infer_onnx.py", f"cannot write {disk}/p.json: Read-only file system")
        assert (disk / "p.json").read_text() == '{"earlier": 1}\n'
        _no_temp_files(disk)
