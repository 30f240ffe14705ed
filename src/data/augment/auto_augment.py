"""timm's RandAugment on PIL images, configured by a timm policy string (`auto_augment`); the grammar
and where it differs from timm on purpose: docs/training.md "Augmentations".  Each call draws from the
`random.Random` it is given, else the one given at construction, else Python's `random` module."""
import math
import random
import re
from typing import Callable, Optional, Sequence

from PIL import Image, ImageEnhance, ImageOps

from src.data.preprocess import IMAGENET_MEAN

LEVEL_DENOM = 10.0  # magnitudes are on timm's 0..10 scale
# geometric ops fill uncovered pixels with the dataset mean, as timm's create_transform sets img_mean
FILL = tuple(min(255, round(255 * float(m))) for m in IMAGENET_MEAN)  # (124, 116, 104)
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
RANDOM_INTERPOLATION = (Image.BILINEAR, Image.BICUBIC)  # timm's 'random': one drawn per op application
_TRANSLATE_PCT = 0.45  # TranslateRel: fraction of the image side at magnitude 10 (timm's translate_pct)
_SOLARIZE_ADD_THRESHOLD = 128


# ----- image ops: (img, arg, fill, resample) -> img; ops without an argument get arg=None -----

def _affine(img, matrix, fill, resample):
    # PIL maps each output pixel (x, y) to input (a x + b y + c, d x + e y + f)
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def shear_x(img, factor, fill, resample):
    return _affine(img, (1, factor, 0, 0, 1, 0), fill, resample)


def shear_y(img, factor, fill, resample):
    return _affine(img, (1, 0, 0, factor, 1, 0), fill, resample)


def translate_x_rel(img, pct, fill, resample):
    return _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill, resample)


def translate_y_rel(img, pct, fill, resample):
    return _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill, resample)


def rotate(img, degrees, fill, resample):
    return img.rotate(degrees, resample=resample, fillcolor=fill)


def auto_contrast(img, _arg, _fill, _resample):
    return ImageOps.autocontrast(img)


def equalize(img, _arg, _fill, _resample):
    return ImageOps.equalize(img)


def invert(img, _arg, _fill, _resample):
    return ImageOps.invert(img)


def posterize(img, bits, _fill, _resample):
    """Keep the `bits` most significant bits of each channel (0 bits = black)."""
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - bits) - 1) & 0xFF  # own LUT: ImageOps.posterize rejects bits=0 since Pillow 10
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


def solarize(img, threshold, _fill, _resample):
    return ImageOps.solarize(img, threshold)


def solarize_add(img, add, _fill, _resample):
    """Add `add` (clipped at 255) to the pixels below 128."""
    lut = [min(255, i + add) if i < _SOLARIZE_ADD_THRESHOLD else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def color(img, factor, _fill, _resample):
    return ImageEnhance.Color(img).enhance(factor)


def contrast(img, factor, _fill, _resample):
    return ImageEnhance.Contrast(img).enhance(factor)


def brightness(img, factor, _fill, _resample):
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img, factor, _fill, _resample):
    return ImageEnhance.Sharpness(img).enhance(factor)


# ----- magnitude (0..10, may be fractional) -> op argument, as timm's LEVEL_TO_ARG -----

def _random_sign(value, rng):
    return -value if rng.random() > 0.5 else value


def _rotate_arg(level, rng):
    return _random_sign(level / LEVEL_DENOM * 30.0, rng)


def _shear_arg(level, rng):
    return _random_sign(level / LEVEL_DENOM * 0.3, rng)


def _translate_rel_arg(level, rng):
    return _random_sign(level / LEVEL_DENOM * _TRANSLATE_PCT, rng)


def _enhance_arg(level, _rng):
    return level / LEVEL_DENOM * 1.8 + 0.1  # [0.1, 1.9], 1.0 (identity) at magnitude 5


def _enhance_increasing_arg(level, rng):
    # 1.0 is identity; moving away in either direction is stronger. The 0.1 floor only
    # matters for mmax > 10 (a negative blend factor otherwise), as in current timm.
    return max(0.1, 1.0 + _random_sign(level / LEVEL_DENOM * 0.9, rng))


def _posterize_arg(level, _rng):
    return int(level / LEVEL_DENOM * 4)  # bits kept: 0..4


def _posterize_increasing_arg(level, rng):
    return 4 - _posterize_arg(level, rng)  # bits kept: 4..0, fewer at higher magnitude


def _solarize_arg(level, _rng):
    return int(level / LEVEL_DENOM * 256)


def _solarize_increasing_arg(level, rng):
    return 256 - _solarize_arg(level, rng)  # threshold 256 (identity) .. 0 (full inversion)


def _solarize_add_arg(level, _rng):
    return int(level / LEVEL_DENOM * 110)


# name -> (image op, level -> argument or None for ops without one)
OPS = {
    "AutoContrast": (auto_contrast, None),
    "Equalize": (equalize, None),
    "Invert": (invert, None),
    "Rotate": (rotate, _rotate_arg),
    "Posterize": (posterize, _posterize_arg),
    "PosterizeIncreasing": (posterize, _posterize_increasing_arg),
    "Solarize": (solarize, _solarize_arg),
    "SolarizeIncreasing": (solarize, _solarize_increasing_arg),
    "SolarizeAdd": (solarize_add, _solarize_add_arg),
    "Color": (color, _enhance_arg),
    "ColorIncreasing": (color, _enhance_increasing_arg),
    "Contrast": (contrast, _enhance_arg),
    "ContrastIncreasing": (contrast, _enhance_increasing_arg),
    "Brightness": (brightness, _enhance_arg),
    "BrightnessIncreasing": (brightness, _enhance_increasing_arg),
    "Sharpness": (sharpness, _enhance_arg),
    "SharpnessIncreasing": (sharpness, _enhance_increasing_arg),
    "ShearX": (shear_x, _shear_arg),
    "ShearY": (shear_y, _shear_arg),
    "TranslateXRel": (translate_x_rel, _translate_rel_arg),
    "TranslateYRel": (translate_y_rel, _translate_rel_arg),
}
RAND_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing",
    "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)


class AugmentOp:
    """One RandAugment op on an RGB PIL image: applied with probability `prob`, at a magnitude
    drawn per application (Gaussian noise of std `magnitude_std`, or uniform in [0, magnitude]
    when it is inf) and clipped to [0, magnitude_max]."""

    def __init__(self, name: str, magnitude: float, prob: float = 0.5, magnitude_std: float = 0.0,
                 magnitude_max: float = LEVEL_DENOM, fill: Sequence[int] = FILL, interpolation: str = "bilinear"):
        if name not in OPS:
            raise ValueError(f"unknown RandAugment op {name!r}; known: {', '.join(OPS)}")
        if interpolation != "random" and interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be random or one of {', '.join(INTERPOLATIONS)}, "
                             f"got {interpolation!r}")
        self.name = name
        self.op, self.level_to_arg = OPS[name]
        self.magnitude, self.prob = magnitude, prob
        self.magnitude_std, self.magnitude_max = magnitude_std, magnitude_max
        self.fill = tuple(fill)
        self.interpolation = interpolation

    def sample_magnitude(self, rng) -> float:
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = rng.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = rng.gauss(magnitude, self.magnitude_std)
        return min(max(magnitude, 0.0), self.magnitude_max)

    def __call__(self, img: Image.Image, rng=random) -> Image.Image:
        if self.prob < 1.0 and rng.random() > self.prob:
            return img
        magnitude = self.sample_magnitude(rng)
        arg = None if self.level_to_arg is None else self.level_to_arg(magnitude, rng)
        resample = (rng.choice(RANDOM_INTERPOLATION) if self.interpolation == "random"
                    else INTERPOLATIONS[self.interpolation])
        return self.op(img, arg, self.fill, resample)

    def __repr__(self):
        return (f"AugmentOp({self.name}, m={self.magnitude}, p={self.prob}, "
                f"mstd={self.magnitude_std}, mmax={self.magnitude_max})")


class RandAugment:
    """Apply `num_layers` ops drawn uniformly with replacement from `ops` to an RGB PIL image.

    Draws come from the call's `rng`, else the constructor's, else the `random` module.
    """

    def __init__(self, ops: Sequence[AugmentOp], num_layers: int = 2, rng: Optional[random.Random] = None):
        self.ops, self.num_layers, self.rng = list(ops), num_layers, rng

    def __call__(self, img: Image.Image, rng: Optional[random.Random] = None) -> Image.Image:
        rng = rng or self.rng or random
        for op in rng.choices(self.ops, k=self.num_layers):
            img = op(img, rng)
        return img

    def __repr__(self):
        return f"RandAugment(n={self.num_layers}, ops={self.ops})"


_SECTION = re.compile(r"([a-z]+)(\d+(?:\.\d+)?)")
_CHECKS = {  # key -> (parse, valid?, what it must be)
    "m": (float, lambda v: v >= 0, "a magnitude >= 0"),
    "n": (int, lambda v: v >= 1, "an integer >= 1"),
    "mstd": (float, lambda v: v >= 0, "a std >= 0"),
    "mmax": (float, lambda v: v > 0, "a magnitude > 0"),
    "inc": (int, lambda v: v in (0, 1), "0 or 1"),
    "p": (float, lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
}


def parse_policy(policy: str) -> dict:
    """'rand-m9-mstd0.5-inc1' -> {'m': 9.0, 'n': 2, 'mstd': 0.5, 'mmax': 10.0, 'inc': 1, 'p': 0.5}.

    mstd above 100 becomes inf (uniform magnitude). Any malformed section raises ValueError.
    """
    sections = policy.split("-")
    if sections[0] != "rand":
        raise ValueError(f"auto_augment {policy!r}: only timm RandAugment policies 'rand-...' are supported")
    params = {"m": LEVEL_DENOM, "n": 2, "mstd": 0.0, "mmax": LEVEL_DENOM, "inc": 0, "p": 0.5}
    seen = set()
    for section in sections[1:]:
        match = _SECTION.fullmatch(section)
        if match is None or match.group(1) not in _CHECKS:
            raise ValueError(f"auto_augment {policy!r}: bad section {section!r}; expected one of "
                             f"{', '.join(k + '<number>' for k in _CHECKS)}")
        key, text = match.groups()
        if key in seen:
            raise ValueError(f"auto_augment {policy!r}: {key!r} given twice")
        seen.add(key)
        parse, valid, what = _CHECKS[key]
        try:
            value = parse(text)
        except ValueError:
            raise ValueError(f"auto_augment {policy!r}: {key} must be {what}, got {text!r}") from None
        if not valid(value):
            raise ValueError(f"auto_augment {policy!r}: {key} must be {what}, got {text!r}")
        params[key] = value
    if params["mstd"] > 100:
        params["mstd"] = math.inf
    return params


def rand_augment_transform(policy: str, interpolation: str = "bilinear", fill: Sequence[int] = FILL,
                           rng: Optional[random.Random] = None) -> RandAugment:
    """Build timm's RandAugment from a policy string (see the module docstring).

    interpolation: of the geometric ops, 'bilinear' / 'bicubic' / 'nearest', or 'random'
    (bilinear or bicubic drawn per application, timm's default when none is given).
    """
    params = parse_policy(policy)
    names = RAND_INCREASING_TRANSFORMS if params["inc"] else RAND_TRANSFORMS
    ops = [AugmentOp(name, params["m"], params["p"], params["mstd"], params["mmax"], fill, interpolation)
           for name in names]
    return RandAugment(ops, params["n"], rng)


def create_auto_augment(policy: str, interpolation: str) -> Optional[Callable[[Image.Image], Image.Image]]:
    """The `auto_augment` config value -> a PIL transform, or None when '' / 'none'."""
    if policy.strip().lower() in ("", "none"):
        return None
    return rand_augment_transform(policy, interpolation)
