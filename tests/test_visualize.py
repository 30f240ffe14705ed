"""visualize.py: CNN class activation map and transformer attention rollout, on a non-square image."""
import numpy as np
import pytest
import mindspore as ms
from PIL import Image

from conftest import run_script
from src.conformer import create_model, param_count_line
from src.visualize import attention_rollout, explain, model_input_size

pytestmark = pytest.mark.e2e  # runs the scripts as subprocesses (or trains)

ARCH = "conformer_reduced_patch16"


@pytest.fixture(scope="module")
def wide_image(tmp_path_factory):
    """150 x 60 noise with a bright block on the right."""
    pixels = np.random.default_rng(0).integers(0, 60, (60, 150, 3), dtype=np.uint8)
    pixels[15:45, 100:140] = 230
    path = tmp_path_factory.mktemp("images") / "wide.png"
    Image.fromarray(pixels).save(path)
    return path


def test_rollout_by_hand_and_input_sizes_keep_the_aspect():
    swap = np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # two heads
    # mean of heads [[.5, .5], [.5, .5]], + identity, rows / 2 -> [[.75, .25], [.25, .75]]; squared for two blocks
    np.testing.assert_allclose(attention_rollout([swap]), [[0.75, 0.25], [0.25, 0.75]])
    np.testing.assert_allclose(attention_rollout([swap, swap]), [[0.625, 0.375], [0.375, 0.625]])
    assert model_input_size(150, 60, 64) == (160, 64)  # 64 * 2.5 = 160
    assert model_input_size(60, 150, 64) == (64, 160)
    assert model_input_size(300, 200, 224) == (352, 224)  # 336, halfway between 320 and 352: rounds up
    assert model_input_size(50, 50, 96) == (96, 96)


def test_cam_decomposes_the_conv_logit_and_rollout_rows_sum_to_1(wide_image):
    ms.set_seed(0)
    net = create_model(ARCH, num_classes=4)
    net.set_train(False)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # forward hooks
    try:
        result = explain(net, Image.open(wide_image).convert("RGB"), 64, 16)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)
    assert result["input_size"] == (160, 64) and result["blocks"] == 3
    assert result["cam"].shape == (2, 5)  # stride 32
    # global average pooling + Dense: the CAM's mean is the predicted class's conv logit
    assert result["cam"].mean() == pytest.approx(result["conv_logits"][result["class"]], abs=1e-4)
    rollout = result["rollout"]
    assert rollout.shape == (1 + 4 * 10, 1 + 4 * 10) and (rollout >= 0).all()
    np.testing.assert_allclose(rollout.sum(axis=1), 1.0, atol=1e-5)
    assert result["rollout_map"].shape == (4, 10)
    assert result["rollout_map"].std() > 0  # the class token does not attend uniformly


def test_script_writes_a_png_with_the_image_aspect(wide_image, tmp_path):
    ckpt = tmp_path / "reduced.ckpt"
    net = create_model(ARCH, num_classes=4)
    ms.save_checkpoint(net, str(ckpt))
    result = run_script("visualize.py", str(wide_image), "--checkpoint", str(ckpt), "--arch", ARCH,
                        "--num_classes", "4", "--image_size", "64", "--device_target", "CPU",
                        "--output", str(tmp_path / "out" / "wide.png"))
    assert result.returncode == 0, result.stderr
    start_up, summary = result.stdout.splitlines()
    assert start_up == param_count_line(net, ARCH)
    assert summary.startswith(f"{tmp_path / 'out' / 'wide.png'}: 1688x240 PNG, input 160x64, class ")
    png = Image.open(tmp_path / "out" / "wide.png")
    assert png.format == "PNG" and png.size == (1688, 240)  # 3 panels of 560 x 224 (2.5 : 1) + gaps, captions
    panels = np.asarray(png.convert("RGB"))[16:]
    assert not np.array_equal(panels[:, :560], panels[:, 564:1124])  # the maps are drawn over the input
    missing = run_script("visualize.py", str(tmp_path / "none.png"), "--checkpoint", str(ckpt), "--arch", ARCH,
                         "--device_target", "CPU")
    lines = missing.stderr.strip().splitlines()
    assert missing.returncode == 2 and len(lines) == 1 and lines[0].startswith("visualize.py: error: "), missing.stderr
