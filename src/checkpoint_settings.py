"""The settings a checkpoint carries so that it can be used alone: train.py writes the model's config
keys (`MODEL_KEYS`) and the class names into every checkpoint, and eval.py, export.py, infer.py and
visualize.py take them back for every key neither an explicit --config nor the command line sets
(another value set there wins with one warning, except arch and num_classes: an error naming both)."""
import json
import sys
from typing import Optional

from src.config import ConfigError
from src.variants import canonical_arch

ENTRY = "run_settings"
MODEL_KEYS = ("arch", "num_classes", "image_size", "disable_approximate_gelu", "use_pytorch_maxpool",
              "amp_level", "crop_pct")
MUST_MATCH = ("arch", "num_classes")  # another value builds a model the weights do not fit


def checkpoint_entry(cfg, class_names) -> dict:
    """{ENTRY: JSON text} for a checkpoint's append_dict."""
    settings = {key: getattr(cfg, key) for key in MODEL_KEYS}
    settings["arch"] = canonical_arch(settings["arch"])
    settings["class_names"] = list(class_names)
    return {ENTRY: json.dumps(settings)}


def read_settings(checkpoint: dict) -> dict:
    """The settings train.py stored in a checkpoint as read ({} for one that has none: a converted or
    foreign checkpoint)."""
    text = checkpoint.get(ENTRY)
    return json.loads(text) if isinstance(text, str) else {}


def _same(key: str, a, b) -> bool:
    return canonical_arch(a) == canonical_arch(b) if key == "arch" else a == b


def apply_checkpoint_settings(cfg, path: str, prog: str) -> Optional[dict]:
    """Fill `cfg`'s model keys from the checkpoint at `path` (see the module docstring); when it records
    settings, prints one line on stderr saying where the settings came from.  Returns the checkpoint as
    read and CRC-checked by src/checkpoint.py's reader (whose one-line errors pass through), for
    `load_weights(..., checkpoint=)` to load without reading the file again; None when nothing was read
    (no path, a PyTorch .pth, which holds no settings)."""
    if not path:
        return None
    from src.checkpoint import read_checkpoint, weights_format  # MindSpore: only when a checkpoint is read
    if weights_format(path) == "torch":
        return None
    checkpoint = read_checkpoint(path)
    settings = read_settings(checkpoint)
    explicit = getattr(cfg, "explicit_keys", {})
    config = f"--config {cfg.config}" if "config" in explicit else f"the default config {cfg.config}"
    taken = []
    for key in MODEL_KEYS:
        if key not in settings or not hasattr(cfg, key):  # a key this script does not read
            continue
        value, ours = settings[key], getattr(cfg, key)
        if key not in explicit:
            setattr(cfg, key, value)
            taken.append(f"{key}={value}")
        elif not _same(key, ours, value):
            clash = f"{key} {ours!r} (from {explicit[key]}) but {path} was trained with {value!r}"
            if key in MUST_MATCH:
                raise ConfigError(f"{clash}: its weights do not fit that model; leave {key} unset (no "
                                  "--config, or one without it) to use the checkpoint's")
            print(f"{prog}: warning: {clash}; using {ours!r}", file=sys.stderr, flush=True)
    if not settings:  # a checkpoint of another tool or of an earlier version: the config as always
        return checkpoint
    if taken:
        source = f"{path} ({', '.join(taken)}); the rest from {config} and the command line"
    else:
        source = f"{config} and the command line (all agree with {path})"
    print(f"{prog}: model settings from {source}", file=sys.stderr, flush=True)
    return checkpoint
