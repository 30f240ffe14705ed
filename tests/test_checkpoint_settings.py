"""A checkpoint train.py writes carries its model settings: the scripts that load it build the right model
from it without a config, an explicit value wins (a conflicting arch/num_classes is a one-line error,
another setting a warning), and each says in one line where the settings came from."""
import os
import re
import subprocess

import pytest
import mindspore as ms

from conftest import REPO, run_script
from datasets import write_digits_folder
from src.checkpoint import load_weights, save_checkpoint_atomic
from src.checkpoint_settings import apply_checkpoint_settings, checkpoint_entry
from src.config import ConfigError, parse_args
from src.conformer import create_model_from_config

# what the demo trains: not the default config's model (conformer_tiny_patch16, 1000 classes, 224 px)
TRAINED = ["--arch", "conformer_reduced_patch16", "--num_classes", "10", "--image_size", "32",
           "--crop_pct", "1.0", "--disable_approximate_gelu", "False"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint as train.py writes a best one: the weights and the run's settings."""
    root = tmp_path_factory.mktemp("settings")
    cfg = parse_args(TRAINED, script="train.py")
    net = create_model_from_config(cfg)
    path = str(root / "best.ckpt")
    save_checkpoint_atomic(net, path, append_dict=dict(checkpoint_entry(cfg, [f"digit {i}" for i in range(10)]),
                                                       epoch=0, top1=0.5))
    bare = str(root / "bare.ckpt")  # weights only, as convert.py or another tool writes them
    ms.save_checkpoint(net, bare)
    return root, path, bare


def _launcher(script, *args, cwd):
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *args], cwd=cwd,
                          env=dict(os.environ, GLOG_v="3"), capture_output=True, text=True, timeout=600)


def _applied(argv, script="eval.py"):
    cfg = parse_args(argv, script=script)
    apply_checkpoint_settings(cfg, cfg.checkpoint if hasattr(cfg, "checkpoint") else cfg.pretrained, script)
    return cfg


def test_without_a_config_the_checkpoint_gives_the_model(trained, capsys):
    _, path, _ = trained
    cfg = _applied(["--pretrained", path])
    assert (cfg.arch, cfg.num_classes, cfg.image_size, cfg.crop_pct) == ("conformer_reduced_patch16", 10, 32, 1.0)
    assert cfg.disable_approximate_gelu is False and cfg.use_pytorch_maxpool is True
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"eval.py: model settings from {path} (arch=conformer_reduced_patch16, num_classes=10, "
                           "image_size=32, disable_approximate_gelu=False")
    assert line.endswith("; the rest from the default config " + os.path.join(REPO, "src", "configs",
                                                                             "conformer_tiny.yaml")
                         + " and the command line")


def test_an_explicit_value_wins_and_a_conflict_is_one_line(trained, capsys):
    _, path, _ = trained
    cfg = _applied(["--pretrained", path, "--image_size", "64"])  # another resolution: allowed, warned
    assert cfg.image_size == 64 and cfg.arch == "conformer_reduced_patch16"
    warning, source = capsys.readouterr().err.splitlines()
    assert warning == (f"eval.py: warning: image_size 64 (from the command line) but {path} was trained with 32; "
                       "using 64")
    assert "num_classes=10" in source and "image_size" not in source
    with pytest.raises(ConfigError, match=re.escape(f"num_classes 5 (from the command line) but {path} was trained "
                                                    "with 10: its weights do not fit")):
        _applied(["--pretrained", path, "--num_classes", "5"])
    tiny = os.path.join(REPO, "src", "configs", "conformer_tiny.yaml")
    with pytest.raises(ConfigError, match=re.escape(f"arch 'conformer_tiny_patch16' (from --config {tiny}) but "
                                                    f"{path} was trained with 'conformer_reduced_patch16'")):
        _applied(["--config", tiny, "--pretrained", path])
    # the same values set explicitly agree: no warning
    capsys.readouterr()
    _applied(["--pretrained", path, *TRAINED[:4]])
    (line,) = capsys.readouterr().err.splitlines()
    assert "model settings from" in line and "warning" not in line


def test_a_checkpoint_without_settings_leaves_the_config(trained, capsys):
    _, _, bare = trained
    cfg = _applied(["--pretrained", bare])
    assert (cfg.arch, cfg.num_classes, cfg.image_size) == ("conformer_tiny_patch16", 1000, 224)
    assert capsys.readouterr().err == ""  # as before checkpoints carried settings


def test_the_file_is_read_once_for_its_settings_and_its_weights(trained, monkeypatch):
    _, path, _ = trained
    read, reads = ms.load_checkpoint, []
    monkeypatch.setattr(ms, "load_checkpoint", lambda *args, **kwargs: reads.append(args[0]) or read(*args, **kwargs))
    cfg = parse_args(["--pretrained", path], script="eval.py")
    checkpoint = apply_checkpoint_settings(cfg, path, "eval.py")
    net = create_model_from_config(cfg)
    load_weights(net, path, checkpoint=checkpoint)
    assert reads == [path]
    saved = read(path)
    assert all((p.asnumpy() == saved[p.name].asnumpy()).all() for p in net.get_parameters())


@pytest.mark.e2e
def test_every_loading_script_builds_the_checkpoints_model_without_a_config(trained):
    root, path, _ = trained
    data = write_digits_folder(root / "digits", train_per_class=0, val_per_class=1)
    cpu = ["--device_target", "CPU"]
    infer = _launcher("run_infer_gpu.sh", os.path.join(data, "val"), "--checkpoint", path, "--output",
                      str(root / "p.json"), "--extra", *cpu, cwd=root)
    assert infer.returncode == 0, infer.stderr[-2000:]
    assert len(re.findall(r"^/\S+\.png \(class: \d\)$", infer.stdout, re.M)) == 10
    assert f"infer.py: model settings from {path} (arch=conformer_reduced_patch16" in infer.stderr
    evaluated = _launcher("run_eval_gpu.sh", "--checkpoint", path, "--extra", *cpu, "--data_url", data, cwd=root)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert re.search(r"^eval results: \{'Loss': [\d.]+", evaluated.stdout, re.M)
    exported = run_script("export.py", "--checkpoint", path, "--file_format", "MINDIR", "--output",
                          str(root), *cpu)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert os.path.isfile(root / "conformer_reduced_patch16.mindir")
    image = os.path.join(data, "val", "3", os.listdir(os.path.join(data, "val", "3"))[0])
    shown = run_script("visualize.py", image, "--checkpoint", path, "--output", str(root / "v.png"), *cpu)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "visualize.py: model settings from" in shown.stderr
    conflict = run_script("infer.py", os.path.join(data, "val"), "--checkpoint", path, "--num_classes", "1000",
                          *cpu)
    assert conflict.returncode == 2
    assert conflict.stderr.strip().splitlines()[-1].startswith("infer.py: error: num_classes 1000 (from the command "
                                                               "line) but")
