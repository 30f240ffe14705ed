"""Where a Conformer looks: the CNN branch's class activation map and the transformer's class-token
attention rollout, on the whole image resized to multiples of 32 (what each panel shows and why it is
exact: docs/inference.md "Visualisation")."""
import io
import os
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont
import mindspore as ms

from src.checkpoint import load_weights
from src.config import start_weights
from src.conformer import create_model_from_config, param_count_line, variant_hparams
from src.data.preprocess import ImageReadError, load_rgb, normalize
from src.io import write_atomic
from src.layers.attention import Attention
from src.runtime.device import init_context

DISPLAY_SHORT_SIDE = 224  # panels are at least this tall/wide, whatever the model's input size
CAPTION_HEIGHT = 16
GAP = 4
# anchor colours of a perceptually ordered map (dark blue -> cyan -> yellow -> red), 0..1
_COLOURS = np.array([[0.05, 0.03, 0.35], [0.0, 0.45, 0.85], [0.2, 0.8, 0.75], [0.95, 0.9, 0.2], [0.85, 0.1, 0.05]])


def model_input_size(width: int, height: int, image_size: int) -> tuple:
    """(W, H) for the network: shorter side image_size, longer side the nearest multiple of 32 to the aspect."""
    short, long = min(width, height), max(width, height)
    long_side = max(32, int(image_size * long / short / 32 + 0.5) * 32)  # ties round up
    return (long_side, image_size) if width >= height else (image_size, long_side)


def attention_rollout(attentions) -> np.ndarray:
    """Attention rollout over blocks (first to last) of [heads, N, N] weights -> [N, N], rows summing to 1."""
    rollout = None
    for attn in attentions:
        mixed = attn.mean(axis=0) + np.eye(attn.shape[-1])  # identity: the residual connection
        mixed /= mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout


def class_activation_map(fmap: np.ndarray, weight: np.ndarray, bias: np.ndarray, cls: int) -> np.ndarray:
    """CNN map [C, h, w] and conv head (W [K, C], b [K]) -> CAM [h, w] of class `cls`; its mean is the logit."""
    return np.tensordot(weight[cls], fmap, axes=1) + bias[cls]


class _Recorder:
    """Hooks that keep each Attention's weights and the last block's CNN map during one forward pass."""

    def __init__(self, net):
        self.attentions, self.fmap = [], None
        self.handles = [cell.register_forward_pre_hook(self._attention)
                        for _, cell in net.cells_and_names() if isinstance(cell, Attention)]
        self.handles.append(net.stages[-1].register_forward_hook(self._last_block))

    def _attention(self, cell, inputs):
        probs, _ = cell.attention_probs(inputs[0])
        self.attentions.append(probs.asnumpy()[0])

    def _last_block(self, cell, inputs, outputs):
        self.fmap = outputs[0].asnumpy()[0]

    def remove(self):
        for handle in self.handles:
            handle.remove()


def explain(net, image: Image.Image, image_size: int, patch_size: int) -> dict:
    """One RGB image through `net` (PYNATIVE mode: hooks) -> predicted class, CAM [H/32, W/32],
    rollout [N, N] and its class-token row as a map [H/p, W/p], for the input size (W, H)."""
    width, height = model_input_size(*image.size, image_size)
    x = normalize(image.resize((width, height), Image.BICUBIC))[None]
    recorder = _Recorder(net)
    try:
        conv_logits, trans_logits = (o.asnumpy()[0] for o in net(ms.Tensor(x)))
    finally:
        recorder.remove()
    cls = int(np.argmax(conv_logits + trans_logits))
    head, _ = net.get_classifier()
    cam = class_activation_map(recorder.fmap, head.weight.asnumpy(), head.bias.asnumpy(), cls)
    rollout = attention_rollout(recorder.attentions)
    return {"class": cls, "conv_logits": conv_logits, "cam": cam, "rollout": rollout,
            "rollout_map": rollout[0, 1:].reshape(height // patch_size, width // patch_size),
            "input_size": (width, height), "blocks": len(recorder.attentions)}


def _colour(values: np.ndarray) -> np.ndarray:
    """[h, w] in [0, 1] -> [h, w, 3] uint8 through the anchor colours."""
    positions = values * (len(_COLOURS) - 1)
    low = np.clip(np.floor(positions).astype(int), 0, len(_COLOURS) - 2)
    frac = (positions - low)[..., None]
    return ((_COLOURS[low] * (1 - frac) + _COLOURS[low + 1] * frac) * 255).astype(np.uint8)


def _overlay(base: Image.Image, heat: np.ndarray) -> Image.Image:
    """Min-max normalised map upsampled (bilinear) to `base` and blended over it."""
    span = heat.max() - heat.min()
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    up = Image.fromarray((heat * 255).astype(np.uint8)).resize(base.size, Image.BILINEAR)
    coloured = Image.fromarray(_colour(np.asarray(up, np.float64) / 255.0))
    return Image.blend(base, coloured, 0.55)


def render(image: Image.Image, result: dict, path: str) -> tuple:
    """Input | CNN CAM | transformer rollout, side by side with captions; returns the PNG's (width, height)."""
    width, height = result["input_size"]
    scale = max(1.0, DISPLAY_SHORT_SIDE / min(width, height))
    panel = image.resize((int(round(width * scale)), int(round(height * scale))), Image.BICUBIC)
    cam, rollout = result["cam"], result["rollout_map"]  # captions give their sizes: a 1x1 map shows nothing
    panels = [("input", panel),
              (f"CNN CAM {cam.shape[1]}x{cam.shape[0]}, class {result['class']}", _overlay(panel, cam)),
              (f"transformer rollout {rollout.shape[1]}x{rollout.shape[0]}", _overlay(panel, rollout))]
    canvas = Image.new("RGB", (3 * panel.width + 2 * GAP, panel.height + CAPTION_HEIGHT), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for i, (caption, picture) in enumerate(panels):
        left = i * (panel.width + GAP)
        canvas.paste(picture, (left, CAPTION_HEIGHT))
        draw.text((left + 2, 2), caption, fill="black", font=font)
    png = io.BytesIO()
    canvas.save(png, format="PNG")
    write_atomic(path, png.getvalue(), "wb")
    return canvas.size


def default_output(image_path: str) -> str:
    """IMAGE.jpg -> IMAGE.conformer.png in the current directory."""
    return os.path.splitext(os.path.basename(image_path))[0] + ".conformer.png"


def run(cfg, checkpoint: Optional[dict] = None) -> str:
    """visualize.py: build and load the configured model (`checkpoint`: its weights file as already read),
    explain cfg.image, write the PNG; -> summary line.

    Raises ImageReadError, CheckpointError, DeviceError (one line each).
    """
    try:
        image = load_rgb(cfg.image)
    except ImageReadError as e:  # its message says why, not which file
        raise ImageReadError(f"{cfg.image}: {e}") from None
    init_context(cfg)
    ms.set_context(mode=ms.PYNATIVE_MODE)  # forward hooks run in PYNATIVE mode only
    net = create_model_from_config(cfg)
    load_weights(net, start_weights(cfg), checkpoint=checkpoint)
    print(param_count_line(net, cfg.arch), flush=True)
    net.set_train(False)
    result = explain(net, image, cfg.image_size, variant_hparams(cfg.arch)["patch_size"])
    path = cfg.output or default_output(cfg.image)
    size = render(image, result, path)
    width, height = result["input_size"]
    return (f"{os.path.abspath(path)}: {size[0]}x{size[1]} PNG, input {width}x{height}, class {result['class']}; "
            f"CNN class activation map, transformer attention rollout over {result['blocks']} blocks")
