"""convert.py as users run it: official and mmpretrain .pth -> .ckpt, refusals in one line."""
import os
import pickle
import zipfile

import numpy as np
import pytest
import mindspore as ms

from conftest import FIXTURES, run_script
from torch_zip_writer import write_official_pth
from src.conformer import create_model

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

FIDELITY = os.path.join(FIXTURES, "fidelity")


def _convert(src, arch, out, *extra):
    return run_script("convert.py", "--src", src, "--arch", arch, "--out", str(out), *extra)


def _strict_load(ckpt, net):
    not_loaded, unused = ms.load_param_into_net(net, ms.load_checkpoint(str(ckpt)))
    assert not not_loaded and unused == ["converted_from"]  # the one entry that is not a parameter


def test_round_trip_official_and_mmpretrain(tmp_path):
    """Convert, load strictly into a fresh net, and compare every value with the source file."""
    from src.convert.torch_checkpoint import load_torch_checkpoint
    from src.convert.state_dict import official_to_mindspore_name, unwrap_state_dict
    from test_fidelity import build_from_fixture

    for name in ("official_p16", "mmpretrain_p16"):
        net, _, _ = build_from_fixture(name)  # fixture models are reduced: build via the library API
        out = tmp_path / f"{name}.ckpt"
        ms.save_checkpoint(net, str(out))
        loaded = ms.load_checkpoint(str(out))
        state_dict, _ = unwrap_state_dict(load_torch_checkpoint(os.path.join(FIDELITY, f"{name}.pth")))
        compared = 0
        for key, value in state_dict.items():
            ms_name = official_to_mindspore_name(key)
            if ms_name is not None:
                np.testing.assert_array_equal(loaded[ms_name].asnumpy(), value)
                compared += 1
        assert compared == 633


def test_cli_converts_a_full_size_checkpoint(tmp_path):
    """A full-size official-format tiny checkpoint, written with torch's zip layout, converts and loads."""
    net = create_model("conformer_tiny_patch16", num_classes=1000)
    src = tmp_path / "Conformer_tiny_patch16.pth"
    write_official_pth(net, src)
    out = tmp_path / "tiny.ckpt"
    result = _convert(str(src), "conformer_tiny", out)
    assert result.returncode == 0, result.stderr
    assert "official format, 1000 classes" in result.stdout
    assert ms.load_checkpoint(str(out))["converted_from"] == "official"
    target = create_model("conformer_tiny_patch16")
    _strict_load(out, target)
    for p in net.get_parameters():
        np.testing.assert_array_equal(target.parameters_dict()[p.name].asnumpy(), p.asnumpy())
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    # the output carries MindSpore's CRC32, so a byte changed later is refused when it is loaded
    from src.checkpoint import CheckpointError, read_checkpoint
    from test_integrity import flip_one_byte
    flip_one_byte(out, tmp_path / "flipped.ckpt")
    with pytest.raises(CheckpointError, match=r"flipped\.ckpt: damaged: its CRC32 does not match"):
        read_checkpoint(str(tmp_path / "flipped.ckpt"))


def test_converted_weights_loaded_into_the_modelzoo_approximations_warn_in_one_line(tmp_path, capsys):
    from src.checkpoint import load_weights, save_checkpoint_atomic
    arch = "conformer_reduced_patch16"
    converted, plain = tmp_path / "converted.ckpt", tmp_path / "trained_here.ckpt"
    save_checkpoint_atomic(create_model(arch), str(converted), append_dict={"converted_from": "mmpretrain"})
    save_checkpoint_atomic(create_model(arch), str(plain))
    load_weights(create_model(arch), str(converted))  # official numerics: nothing to say
    load_weights(create_model(arch, approximate_gelu=True), str(plain))  # not converted: nothing to say
    assert capsys.readouterr().err == ""
    load_weights(create_model(arch, approximate_gelu=True, pytorch_maxpool=False), str(converted))
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {converted} holds weights converted from the mmpretrain model, but this network uses the "
        "ModelZoo approximations (disable_approximate_gelu: False, use_pytorch_maxpool: False): its outputs "
        "differ from the mmpretrain model's; set both keys True for its numerics"]
    load_weights(create_model(arch, pytorch_maxpool=False), str(converted))
    assert "(use_pytorch_maxpool: False)" in capsys.readouterr().err


def test_cli_refuses_wrong_arch_in_one_line(tmp_path):
    out = tmp_path / "x.ckpt"
    result = _convert(os.path.join(FIDELITY, "official_p16.pth"), "conformer_tiny_patch16", out)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "shape mismatch at 'cls_token'" in lines[0], result.stderr
    assert not out.exists()


def test_cli_refuses_a_malicious_pickle_without_running_it(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    src = tmp_path / "evil.pth"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"model": Exploit()}, protocol=2))
        zf.writestr("archive/version", "3\n")
    result = _convert(str(src), "conformer_tiny_patch16", tmp_path / "x.ckpt")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "system" in result.stderr, result.stderr
    assert not marker.exists()


def test_cli_missing_and_non_checkpoint_files(tmp_path):
    result = _convert(str(tmp_path / "absent.pth"), "conformer_tiny_patch16", tmp_path / "x.ckpt")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    result = _convert(str(text), "conformer_tiny_patch16", tmp_path / "x.ckpt")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "not a PyTorch checkpoint" in result.stderr
