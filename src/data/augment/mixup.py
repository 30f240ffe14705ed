"""timm's Mixup / CutMix with label smoothing: a batch of images and class indices in, mixed images and
soft targets out (semantics: docs/training.md "Augmentations"; why not MindSpore's: docs/development.md
"How it works: the data pipeline").  Each call draws from the `random.Random` it is given, else the one
given at construction, else Python's `random` module."""
import random
from typing import Optional

import numpy as np

MODES = ("batch", "pair", "elem")


def smoothed_one_hot(labels: np.ndarray, num_classes: int, smoothing: float) -> np.ndarray:
    """int [B] -> float32 [B, K]: smoothing / K everywhere, 1 - smoothing + smoothing / K at the label."""
    off = smoothing / num_classes
    targets = np.full((len(labels), num_classes), off, np.float32)
    targets[np.arange(len(labels)), labels] = 1.0 - smoothing + off
    return targets


def mixup_target(labels: np.ndarray, num_classes: int, lam, smoothing: float) -> np.ndarray:
    """Soft targets lam * y + (1 - lam) * y[::-1]; lam is a float or a float [B, 1] array."""
    y = smoothed_one_hot(labels, num_classes, smoothing)
    return (y * lam + y[::-1] * (1.0 - lam)).astype(np.float32)


def apply_mix(images: np.ndarray, weights: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Images float32 [B, C, H, W] mixed with their partners B-1-i: out = x * w + partner * w' with
    (w, w') = weights[i], except inside boxes[i] (top, bottom, left, right), where out = partner.
    The graph's version: src/data/batch_finish.py."""
    partners = images[::-1]
    out = images * weights[:, 0, None, None, None] + partners * weights[:, 1, None, None, None]
    for i, (top, bottom, left, right) in enumerate(boxes):
        out[i, :, top:bottom, left:right] = partners[i, :, top:bottom, left:right]
    return out


def cutmix_box(hw, lam: float, rng) -> tuple:
    """Box (top, bottom, left, right) of sides int(sqrt(1 - lam) * H), int(sqrt(1 - lam) * W) around a
    uniform centre, clipped to the image, and the lam that box really gives (1 - area / (H * W))."""
    img_h, img_w = hw
    ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    cy, cx = rng.randrange(img_h), rng.randrange(img_w)
    top, bottom = np.clip(cy - cut_h // 2, 0, img_h), np.clip(cy + cut_h // 2, 0, img_h)
    left, right = np.clip(cx - cut_w // 2, 0, img_w), np.clip(cx + cut_w // 2, 0, img_w)
    corrected = 1.0 - (bottom - top) * (right - left) / float(img_h * img_w)
    return (int(top), int(bottom), int(left), int(right)), corrected


class Mixup:
    """`__call__(images float32 [B, C, H, W], labels int [B], mix=True) -> (images float32 [B, C, H, W],
    targets float32 [B, num_classes])`.

    `mix=False` (mixup switched off, e.g. from `mixup_off_epoch` on) keeps the images and
    returns the smoothed one-hot targets. mixup_alpha = cutmix_alpha = 0 means the same.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 prob: float = 1.0, switch_prob: float = 0.5, mode: str = "batch",
                 label_smoothing: float = 0.1, rng: Optional[random.Random] = None):
        if mode not in MODES:
            raise ValueError(f"mixup mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.mode, self.label_smoothing = mode, label_smoothing
        self.rng = rng

    @property
    def active(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    def __call__(self, images: np.ndarray, labels: np.ndarray, mix: bool = True, rng: Optional[random.Random] = None):
        weights, boxes, targets = self.draw(labels, images.shape, mix, rng)
        return apply_mix(np.asarray(images, np.float32), weights, boxes), targets

    def draw(self, labels: np.ndarray, shape, mix: bool = True, rng: Optional[random.Random] = None) -> tuple:
        """The random draws of one call on images of `shape` [B, C, H, W] as what `apply_mix` takes:
        (weights float32 [B, 2], boxes int64 [B, 4], targets float32 [B, num_classes])."""
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must be in [0, {self.num_classes}), got {labels.min()}..{labels.max()}")
        batch = shape[0]
        if self.mode == "pair" and batch % 2:
            raise ValueError(f"mixup_mode pair needs an even batch size, got {batch}")
        weights = np.tile(np.array([1.0, 0.0], np.float32), (batch, 1))
        boxes = np.zeros((batch, 4), np.int64)
        lam = 1.0
        if mix and self.active:
            rng = rng or self.rng or random
            if self.mode == "batch":
                lam = self._mix_rows(range(batch), weights, boxes, shape, rng)
            else:
                both = self.mode == "pair"
                lams = np.array([self._mix_rows((i, batch - 1 - i) if both else (i,), weights, boxes, shape, rng)
                                 for i in range(batch // 2 if both else batch)], np.float32)
                # pair: sample B-1-i shares pair i's lam
                lam = (np.concatenate([lams, lams[::-1]]) if both else lams)[:, None]
        return weights, boxes, mixup_target(labels, self.num_classes, lam, self.label_smoothing)

    def _draw(self, rng):
        """(lam, use_cutmix) for one batch / pair / sample: lam = 1 means leave it unmixed."""
        if rng.random() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = rng.random() < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return rng.betavariate(alpha, alpha), use_cutmix

    def _mix_rows(self, rows, weights, boxes, shape, rng) -> float:
        """One draw for `rows` (each mixed with its partner B-1-row), written to their weights and boxes;
        returns the (box-corrected) lam."""
        lam, use_cutmix = self._draw(rng)
        if lam == 1.0:
            return 1.0
        rows = list(rows)
        if use_cutmix:
            (top, bottom, left, right), lam = cutmix_box(shape[2:], lam, rng)
            boxes[rows] = (top, bottom, left, right)
        else:
            weights[rows] = (lam, 1.0 - lam)
        return lam


def create_mixup(cfg) -> Mixup:
    """The Mixup/CutMix of `cfg`'s recipe (mixup, cutmix, mixup_prob, switch_prob, mixup_mode,
    label_smoothing)."""
    return Mixup(cfg.num_classes, cfg.mixup, cfg.cutmix, cfg.mixup_prob, cfg.switch_prob, cfg.mixup_mode,
                 cfg.label_smoothing)
