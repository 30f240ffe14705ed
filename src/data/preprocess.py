"""Reading images and the eval-time transform: one implementation for every inference path.

eval.py (through the dataset pipeline), infer.py and the onnxruntime scripts all
call `load_rgb` + `eval_transform`, so MindSpore and ONNX see identical inputs.
The transform is the official one (torchvision on PIL): resize the shorter side
to int(image_size / crop_pct) with PIL bicubic, center crop, ImageNet normalize.
"""
import numpy as np
from PIL import Image, UnidentifiedImageError

from src.errors import ConformerError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class ImageReadError(ConformerError, ValueError):
    """An image file that cannot be decoded; the message says why."""


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    Alpha is dropped and CMYK/gray/palette converted, as `.convert('RGB')` in the
    official loader; 16-bit and 32-bit grayscale are rescaled to 8 bits first,
    which `.convert` would instead clip to white.
    """
    if img.mode in _HIGH_BIT_DEPTH_MODES:
        array = np.asarray(img, dtype=np.float64)
        top = 1.0 if img.mode == "F" else 65535.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when converting a transparent palette straight to RGB
    return img if img.mode == "RGB" else img.convert("RGB")


def load_rgb(path: str) -> Image.Image:
    """Decode `path` fully into an RGB image; any failure is one ImageReadError line."""
    try:
        with Image.open(path) as img:
            img.load()  # decode now: a truncated file fails here, not later in a worker
            return to_rgb(img)
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError("not an image file PIL can identify") from None
    except Image.DecompressionBombError as e:  # not an OSError: PIL refuses images over 2 x MAX_IMAGE_PIXELS
        raise ImageReadError(f"too large ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL's decoders raise all three for corrupt data
        raise ImageReadError(f"cannot decode ({e})") from None


def resize_shorter_center_crop(img: Image.Image, image_size: int, crop_pct: float) -> Image.Image:
    """torchvision Resize(int(image_size / crop_pct), BICUBIC) then CenterCrop(image_size)."""
    scale_size = int(image_size / crop_pct)
    w, h = img.size
    if w <= h:
        new_w, new_h = scale_size, int(scale_size * h / w)
    else:
        new_w, new_h = int(scale_size * w / h), scale_size
    img = img.resize((max(new_w, 1), max(new_h, 1)), Image.BICUBIC)
    left = int(round((new_w - image_size) / 2.0))
    top = int(round((new_h - image_size) / 2.0))
    return img.crop((left, top, left + image_size, top + image_size))


def normalize_pixels(pixels: np.ndarray) -> np.ndarray:
    """uint8 [..., 3, H, W] -> float32, ImageNet mean/std normalised (= ToTensor + Normalize); the training
    graph's version: src/data/batch_finish.py."""
    mean, std = IMAGENET_MEAN[:, None, None], IMAGENET_STD[:, None, None]
    return (pixels.astype(np.float32, order="C") / np.float32(255.0) - mean) / std


def normalize(img: Image.Image) -> np.ndarray:
    """RGB image -> float32 CHW array, ImageNet mean/std normalised."""
    return normalize_pixels(np.asarray(img).transpose(2, 0, 1))


def eval_pixels(img: Image.Image, image_size: int, crop_pct: float) -> np.ndarray:
    """The official eval transform of one RGB image before its normalisation -> uint8 [3, image_size,
    image_size] (eval.py's pipeline: a graph normalises, src/inference/evaluate.py)."""
    return np.asarray(resize_shorter_center_crop(img, image_size, crop_pct)).transpose(2, 0, 1).copy()


def eval_transform(img: Image.Image, image_size: int, crop_pct: float) -> np.ndarray:
    """The official eval transform of one RGB image -> float32 [3, image_size, image_size]."""
    return normalize_pixels(eval_pixels(img, image_size, crop_pct))
