"""One config for every script: `SCHEMA` is the single list of keys, each with its default, its
documentation and the scripts that read it (which offer it as a `--key` flag); a YAML file, over its
`base:` recipe, overrides the defaults and the command line overrides the YAML, and any error is one
line with exit status 2 (docs/configuration.md).  `python -m src.config [--config FILE] [--key V ...]`
prints the resolved configuration as YAML; `--markdown` alone, the key table of docs/configuration.md."""
import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

import yaml

# the allowed choices come from the modules that implement them, all MindSpore-free: `--help` stays fast
from .data.augment.auto_augment import INTERPOLATIONS
from .data.augment.mixup import MODES as MIXUP_MODES
from .data.augment.random_erasing import MODES as ERASING_MODES
from .data.labels import LAYOUTS
from .deploy.formats import FORMATS
from .errors import ConformerError
from .inference.amp import AMP_LEVELS
from .inference.tta import TTA_MODES
from .runtime.targets import DEVICE_TARGETS
from .trainer.lr_schedule import SCHEDULES
from .trainer.optimizer import OPTIMIZERS
from .variants import ARCH_NAMES

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "src", "configs", "conformer_tiny.yaml")


# The scripts that parse the schema, by the name each passes to `parse_args`.
TRAIN, EVAL, INFER, EXPORT = "train.py", "eval.py", "infer.py", "export.py"
SUMMARY, VISUALIZE = "summary.py", "visualize.py"
INFER_ONNX, EVAL_ONNX = "infer_onnx.py", "eval_onnx.py"
BENCH, MEMORY = "tools/bench.py", "tools/memory.py"
SCRIPTS = (TRAIN, EVAL, INFER, EXPORT, SUMMARY, VISUALIZE, INFER_ONNX, EVAL_ONNX, BENCH, MEMORY)


@dataclass(frozen=True)
class Option:
    default: Any
    help: str
    read_by: frozenset  # the scripts that read this key (and so offer it as a flag)
    choices: Optional[tuple] = None
    check: Optional[Callable[[Any], bool]] = None  # value -> ok
    check_msg: str = ""


def _positive(v):
    return v > 0


def _non_negative(v):
    return v >= 0


def _probability(v):
    return 0.0 <= v <= 1.0


def _rate(v):
    return 0.0 <= v < 1.0


# Who reads what, from each script's call graph: init_context (src/runtime/device.py) and
# create_model_from_config (src/conformer.py) in every script that runs MindSpore; create_dataset
# (src/data/imagenet.py) with its train split in train.py and the benchmark's data part, its val
# split in eval.py too; build_train_step (src/trainer/trainer.py) in train.py and tools/memory.py.
ALL = frozenset(SCRIPTS)
MINDSPORE = ALL - {INFER_ONNX, EVAL_ONNX}  # init_context and create_model_from_config
MODEL = MINDSPORE
DATASET = frozenset({TRAIN, EVAL})  # which images: bench.py generates its own, but for its feed part
TRAIN_SET = frozenset({TRAIN, BENCH})  # the training images: train.py and bench.py's feed part
TRAIN_DATA = frozenset({TRAIN, BENCH})  # how they are augmented
DATA = TRAIN_DATA | {EVAL}  # either split of create_dataset
BATCH = frozenset({TRAIN, EVAL, INFER, INFER_ONNX, EVAL_ONNX, SUMMARY, MEMORY})
TRAIN_STEP = frozenset({TRAIN, MEMORY})  # build_train_step: schedule, optimizer, EMA, loss scale
OPTIMIZER = TRAIN_STEP | {BENCH}  # create_optimizer and the train-step settings bench.py times
TRAIN_ONLY = frozenset({TRAIN})
EVAL_TRANSFORM = DATA | {INFER, INFER_ONNX, EVAL_ONNX}  # crop_pct
# labels CSVs (src/data/labels.py): the scripts that read a split with known labels, and those that
# index class names by train_dir's folders (infer.py / infer_onnx.py take them from --class_names)
LABELS_READERS = DATASET | {EVAL_ONNX, INFER, INFER_ONNX}
CLASS_NAMES = DATASET | {EVAL_ONNX}
CHECKPOINT_READERS = frozenset({TRAIN, EVAL, EXPORT, INFER, VISUALIZE, SUMMARY})
# The words every entry point uses in one sense (docs/configuration.md "Vocabulary"; tests/test_readme.py holds each
# script's --help to them).
VOCABULARY = {
    "--checkpoint": "the checkpoint this run starts from",
    "--pretrained": "weights-only initialisation",
    "--batch_size": "images per device per forward pass or training step",
    "--output": "the file this run writes",
}
# Old names kept where they existed: --batch was the batch size of these scripts' own option.
CLI_ALIASES = {"batch_size": ("--batch", frozenset({INFER, INFER_ONNX, EVAL_ONNX, SUMMARY, MEMORY}))}


def add_checkpoint_arg(parser, what: str) -> None:
    """--checkpoint with its vocabulary meaning; `what` says what this script does with it."""
    parser.add_argument("--checkpoint", default="", help=f"{VOCABULARY['--checkpoint']}: {what}")


def add_output_arg(parser, what: str, *aliases: str, default: str = "") -> None:
    """--output (plus the script's old names) with its vocabulary meaning."""
    parser.add_argument("--output", *aliases, default=default, help=f"{VOCABULARY['--output']}: {what}")


def add_results_file_arg(parser, onnx: bool = False) -> None:
    """--results_file of eval.py and eval_onnx.py (written by src/inference/results_file.py)."""
    printed = "the printed line is" if onnx else "the printed lines are"
    heads = " (conv, transformer and loss only from a model exported with --export_heads)" if onnx else ""
    parser.add_argument("--results_file", default="", help=(
        "also write the results as JSON to this file (atomically): {\"num_images\": N, \"summed\": {\"top1\", "
        "\"top5\", \"loss\"}, \"conv\": {...}, \"transformer\": {...}, \"per_class_top1\": [...], "
        "\"confusion_matrix\": [[...]], \"class_names\": [...]}, and with matplotlib the confusion matrix as "
        f"R_confusion.png beside it; {printed} the same with or without it{heads}"))


def start_weights(cfg) -> str:
    """The weights a non-training run loads: --checkpoint, else pretrained."""
    return cfg.checkpoint or cfg.pretrained


# Defaults are the shipped ImageNet recipe's (a test holds them equal to src/configs/_base_imagenet.yaml)
# and the official numerics, so a YAML that sets only `arch` is the official model and recipe.
SCHEMA = {
    "Dataset": {
        "dataset": Option("ImageNet", "how a split is read: ImageNet = class folders data_url/<split>/<class>/<image>, "
                                      "or a flat split folder when its labels key names a CSV; ImageFolder = class "
                                      "folders only (a labels key set is an error)",
                          read_by=LABELS_READERS | TRAIN_SET, choices=tuple(LAYOUTS)),
        "data_url": Option("/data/imagenet/", "dataset root folder", read_by=DATASET | TRAIN_SET | {EVAL_ONNX}),
        "train_dir": Option("train", "training split folder under data_url (its sorted class folders also index "
                                     "the class names of a labels CSV)", read_by=CLASS_NAMES | TRAIN_SET),
        "val_dir": Option("val", "validation split folder under data_url", read_by=DATASET | {EVAL_ONNX}),
        "train_labels": Option("", "'' = class folders; else a CSV (path,label per row, or the "
                                   "ImageId,PredictionString form) labelling the images of a flat train_dir",
                               read_by=CLASS_NAMES | TRAIN_SET),
        "val_labels": Option("", "'' = class folders; else a CSV (path,label per row, or ImageNet's "
                                 "LOC_val_solution.csv as distributed) labelling the images of a flat val_dir "
                                 "(infer: of DATA, to report accuracy)", read_by=LABELS_READERS),
        "train_num_samples": Option(-1, "-1 = all training images; N = N files evenly spaced over the sorted list (every class kept)",
                                    read_by=TRAIN_SET, check=lambda v: v == -1 or v > 0, check_msg="must be -1 or > 0"),
        "val_num_samples": Option(-1, "-1 = all validation images; N = N files evenly spaced over the sorted list",
                                  read_by=DATASET, check=lambda v: v == -1 or v > 0, check_msg="must be -1 or > 0"),
        "cache_decoded_mib": Option(0, "keep up to N MiB of decoded training images in memory, so each is "
                                       "decoded once per run, not once per epoch (small datasets); 0 = off",
                                    read_by=TRAIN_SET, check=_non_negative, check_msg="must be >= 0"),
    },
    "Augmentations": {
        "auto_augment": Option("rand-m9-mstd0.5-inc1", "timm RandAugment policy string; '' or none = off", read_by=TRAIN_DATA),
        "aa_interpolation": Option("bicubic", "interpolation of RandomResizedCrop and RandAugment",
                                   read_by=TRAIN_DATA, choices=tuple(INTERPOLATIONS)),
        "re_mode": Option("pixel", "random erasing fill", read_by=TRAIN_DATA, choices=ERASING_MODES),
        "re_prob": Option(0.25, "random erasing probability", read_by=TRAIN_DATA, check=_probability, check_msg="must be in [0, 1]"),
        "re_count": Option(1, "random erasing boxes per image", read_by=TRAIN_DATA, check=_positive, check_msg="must be > 0"),
        "cutmix": Option(1.0, "CutMix alpha (0 = off)", read_by=TRAIN_DATA, check=_non_negative, check_msg="must be >= 0"),
        "mixup": Option(0.8, "Mixup alpha (0 = off)", read_by=TRAIN_DATA, check=_non_negative, check_msg="must be >= 0"),
        "mixup_prob": Option(1.0, "probability of applying mixup or cutmix to a batch",
                             read_by=TRAIN_DATA, check=_probability, check_msg="must be in [0, 1]"),
        "mixup_mode": Option("batch", "mixup granularity", read_by=TRAIN_DATA, choices=MIXUP_MODES),
        "mixup_off_epoch": Option(0.0, "epoch after which mixup/cutmix stop (0 = never)",
                                  read_by=TRAIN_DATA, check=_non_negative, check_msg="must be >= 0"),
        "switch_prob": Option(0.5, "probability of cutmix instead of mixup when both are on",
                              read_by=TRAIN_DATA, check=_probability, check_msg="must be in [0, 1]"),
        "label_smoothing": Option(0.1, "label smoothing", read_by=TRAIN_DATA, check=_rate, check_msg="must be in [0, 1)"),
        "hflip": Option(0.5, "horizontal flip probability (timm --hflip)", read_by=TRAIN_DATA,
                        check=_probability, check_msg="must be in [0, 1]"),
        "min_crop": Option(0.08, "RandomResizedCrop minimum area fraction",
                           read_by=TRAIN_DATA, check=lambda v: 0.0 < v <= 1.0, check_msg="must be in (0, 1]"),
        "crop_pct": Option(0.875, "eval: resize to image_size / crop_pct, then center crop",
                           read_by=EVAL_TRANSFORM, check=lambda v: 0.0 < v <= 1.0, check_msg="must be in (0, 1]"),
        "repeated_aug": Option(3, "repeated augmentation (DeiT RASampler): each selected image N times per epoch, "
                                  "differently augmented, on different ranks; epoch length kept; 0 = off",
                               read_by=TRAIN_SET, check=lambda v: v == 0 or v >= 2,
                               check_msg="must be 0 (off) or a repeat count >= 2"),
    },
    "Optimizer": {
        "optimizer": Option("adamw", "optimizer", read_by=OPTIMIZER, choices=OPTIMIZERS),
        "beta": Option([0.9, 0.999], "AdamW betas",
                       read_by=OPTIMIZER, check=lambda v: all(0.0 <= b < 1.0 for b in v), check_msg="must be in [0, 1)"),
        "eps": Option(1.0e-8, "AdamW epsilon", read_by=OPTIMIZER, check=_positive, check_msg="must be > 0"),
        "base_lr": Option(0.001, "peak learning rate", read_by=OPTIMIZER, check=_positive, check_msg="must be > 0"),
        "min_lr": Option(1.0e-5, "final learning rate of the cosine schedule",
                         read_by=TRAIN_STEP, check=_non_negative, check_msg="must be >= 0"),
        "lr_scheduler": Option("cosine_lr", "learning-rate schedule, stepped per iteration",
                               read_by=TRAIN_STEP, choices=SCHEDULES),
        "lr_adjust": Option(30, "step size in epochs of step_lr/multistep_lr",
                            read_by=TRAIN_STEP, check=_positive, check_msg="must be > 0"),
        "lr_gamma": Option(0.97, "decay factor of step_lr/multistep_lr/exp_lr",
                           read_by=TRAIN_STEP, check=_positive, check_msg="must be > 0"),
        "momentum": Option(0.9, "momentum of the momentum/sgd optimizers",
                           read_by=OPTIMIZER, check=_probability, check_msg="must be in [0, 1]"),
        "weight_decay": Option(0.05, "decoupled weight decay (not on biases, norms, cls_token)",
                               read_by=OPTIMIZER, check=_non_negative, check_msg="must be >= 0"),
    },
    "Network training config": {
        "epochs": Option(300, "training epochs", read_by=TRAIN_STEP, check=_positive, check_msg="must be > 0"),
        "batch_size": Option(128, VOCABULARY["--batch_size"], read_by=BATCH, check=_positive, check_msg="must be > 0"),
        "is_dynamic_loss_scale": Option(True, "dynamic (True) or static (False) loss scaling", read_by=OPTIMIZER),
        "loss_scale": Option(1024, "initial (dynamic) or fixed (static) loss scale",
                             read_by=OPTIMIZER, check=_positive, check_msg="must be > 0"),
        "num_parallel_workers": Option(8, "data-loading workers (capped at the CPU count), of data_workers_mode",
                                       read_by=DATA, check=_positive,
                                       check_msg="must be > 0"),
        "data_workers_mode": Option("process", "training and evaluation batches computed by worker processes "
                                               "started once per run, outside the reading process's interpreter "
                                               "lock (process), or by threads of that process (thread)",
                                    read_by=DATA, choices=("process", "thread")),
        "start_epoch": Option(0, "epoch to start from when not resuming", read_by=TRAIN_ONLY, check=_non_negative,
                              check_msg="must be >= 0"),
        "warmup_length": Option(5, "linear warm-up, in epochs", read_by=TRAIN_STEP, check=_non_negative, check_msg="must be >= 0"),
        "warmup_lr": Option(1.0e-6, "learning rate at the start of warm-up",
                            read_by=TRAIN_STEP, check=_non_negative, check_msg="must be >= 0"),
        "use_clip_grad_norm": Option(False, "clip gradients by global norm", read_by=OPTIMIZER),
        "clip_grad_norm": Option(1.0, "global-norm clipping threshold", read_by=OPTIMIZER, check=_positive, check_msg="must be > 0"),
        "exclude_epoch_state": Option(True, "loading `pretrained`: weights only, not epoch/optimizer state", read_by=TRAIN_ONLY),
        "seed": Option(0, "random seed (identical on every rank)", read_by=MINDSPORE,
                       check=_non_negative, check_msg="must be >= 0"),
        "deterministic": Option(True, "deterministic kernels and collectives (mindspore.set_deterministic): with "
                                      "the same config, seed and device count a run ends with the same weights "
                                      "(docs/training.md \"Reproducibility\": what it costs, what stays nondeterministic "
                                      "on GPU)", read_by=MINDSPORE),
        "with_ema": Option(True, "keep an exponential moving average of the weights", read_by=TRAIN_STEP),
        "ema_decay": Option(0.99996, "EMA decay per step", read_by=TRAIN_STEP, check=_rate, check_msg="must be in [0, 1)"),
        "pynative_mode": Option(False, "run eagerly (PYNATIVE) instead of GRAPH mode", read_by=MINDSPORE),
        "grad_accumulation_steps": Option(1, "micro-batches of batch_size per optimizer step (global batch = "
                                             "batch_size x this x devices); LR schedule and steps count "
                                             "optimizer steps", read_by=TRAIN_STEP, check=_positive,
                                          check_msg="must be > 0"),
        "max_nonfinite_steps": Option(100, "stop the run with an error after N consecutive optimizer steps "
                                           "with non-finite gradients (each is skipped and halves a dynamic loss "
                                           "scale, which reaches its floor of 1 from loss_scale in log2(loss_scale) "
                                           "steps); 0 = never stop",
                                      read_by=TRAIN_ONLY, check=_non_negative, check_msg="must be >= 0"),
        "recompute": Option(False, "recompute each block's activations in the backward pass instead of storing "
                                   "them (less memory, ~1 more forward pass; random ops are kept)", read_by=TRAIN_STEP),
        "graph_kernel_fusion": Option(False, "compile fused kernels of elementwise ops, transposes and reductions "
                                             "(MindSpore's graph kernel fusion, AKG): less memory, a longer first "
                                             "compile (docs/training.md \"Memory levers\")", read_by=TRAIN_STEP | {BENCH}),
    },
    "Model arguments": {
        "arch": Option("conformer_tiny_patch16", "model variant (ModelZoo aliases accepted)",
                       read_by=MODEL, choices=ARCH_NAMES),
        "amp_level": Option("O0", "float16 mixed precision of training and of eval.py / infer.py's network "
                                  "(an exported file keeps its own)", read_by=TRAIN_STEP | {EVAL, INFER},
                            choices=AMP_LEVELS),
        "file_format": Option("ONNX", "export format", read_by=frozenset({EXPORT}), choices=FORMATS),
        "pretrained": Option("", VOCABULARY["--pretrained"] + ": train.py fine-tunes from it (heads of another "
                                             "size re-initialised); the other scripts load it when no --checkpoint "
                                             "is given ('' = none)",
                             read_by=CHECKPOINT_READERS),
        "image_size": Option(224, "input resolution, any size >= 32 (the CNN branch downsamples by 32; other "
                                  "than multiples of 32, the stem's map is zero-padded as in mmpretrain)",
                             read_by=ALL, check=lambda v: v >= 32,
                             check_msg="must be >= 32 (the CNN branch downsamples by 32)"),
        "num_classes": Option(1000, "number of classes", read_by=MODEL, check=_positive, check_msg="must be > 0"),
        "drop": Option(0.0, "dropout rate in the transformer MLP and attention projection",
                       read_by=MODEL, check=_rate, check_msg="must be in [0, 1)"),
        "drop_block": Option(0.0, "attention dropout rate (ModelZoo name)", read_by=MODEL,
                             check=_rate, check_msg="must be in [0, 1)"),
        "drop_path": Option(0.1, "stochastic depth rate of the last transformer block (linear from 0)",
                            read_by=MODEL, check=_rate, check_msg="must be in [0, 1)"),
        "disable_approximate_gelu": Option(True, "True = exact erf GELU (official numerics); "
                                                  "False = tanh approximation (ModelZoo)", read_by=MODEL),
        "use_pytorch_maxpool": Option(True, "True = PyTorch max-pool padding (official numerics); "
                                             "False = 'same' padding (ModelZoo)", read_by=MODEL),
        "tta": Option("", "test-time augmentation: '' = none; 'flip' = average the logits (each head's) of the "
                          "image and its horizontal mirror", read_by=frozenset({EVAL, INFER, EVAL_ONNX, INFER_ONNX}),
                      choices=TTA_MODES),
    },
    "Hardware setup": {
        "device_id": Option(0, "device index", read_by=MINDSPORE, check=_non_negative,
                            check_msg="must be >= 0"),
        "device_num": Option(1, "number of devices (set by the launch scripts)", read_by=MINDSPORE, check=_positive,
                             check_msg="must be > 0"),
        "device_target": Option("GPU", "GPU or CPU (Ascend where MindSpore has it)", read_by=ALL,
                                choices=DEVICE_TARGETS),
        "cpu_kernels": Option(True, "on CPU, run LayerNorm, GELU, softmax and the layout transposes as the "
                                    "project's own C++ kernels (compiled once per machine into the kernel cache; "
                                    "without a compiler, one warning and MindSpore's ops); no effect on GPU/Ascend "
                                    "or in exported files",
                              read_by=MINDSPORE),
    },
    "Callbacks setup": {
        "summary_root_dir": Option("./summary_dir/", "logs, metrics CSV and curves", read_by=MINDSPORE),
        "ckpt_root_dir": Option("./checkpoints/", "current checkpoints", read_by=TRAIN_ONLY),
        "best_ckpt_root_dir": Option("./best_checkpoints/", "best checkpoints by validation top-1", read_by=TRAIN_ONLY),
        "ckpt_keep_num": Option(10, "current checkpoints kept", read_by=TRAIN_ONLY, check=_positive, check_msg="must be > 0"),
        "best_ckpt_num": Option(5, "best checkpoints kept", read_by=TRAIN_ONLY, check=_positive, check_msg="must be > 0"),
        "ckpt_save_every_step": Option(0, "save every N steps (0 = off)", read_by=TRAIN_ONLY, check=_non_negative,
                                       check_msg="must be >= 0"),
        "ckpt_save_every_seconds": Option(1800, "save every N seconds (0 = off)", read_by=TRAIN_ONLY, check=_non_negative,
                                          check_msg="must be >= 0"),
        "print_loss_every": Option(100, "progress line every N steps", read_by=TRAIN_ONLY, check=_positive,
                                   check_msg="must be > 0"),
        "summary_loss_collect_freq": Option(20, "training loss and lr recorded in loss.csv (and plotted in "
                                                "metrics.png) every N steps; 1 = every step",
                                            read_by=TRAIN_ONLY, check=_positive, check_msg="must be > 0"),
        "tensorboard": Option(True, "also write TensorBoard event files to summary_root_dir (`tensorboard --logdir "
                                    "SUMMARY_ROOT_DIR`; needs the optional package tensorboardX)", read_by=TRAIN_ONLY),
        "model_postfix": Option(0, "suffix of checkpoint file names", read_by=TRAIN_ONLY),
        "collect_input_data": Option(False, "record each epoch's first training batch as an image grid in "
                                                "summary_root_dir (PNG, and in TensorBoard)", read_by=TRAIN_ONLY),
        "dump_graph": Option(False, "save MindSpore IR graphs to summary_root_dir", read_by=MINDSPORE),
    },
}
OPTIONS = {key: opt for section in SCHEMA.values() for key, opt in section.items()}


class ConfigError(ConformerError, ValueError):
    """A config problem, reported as one line."""


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list"}[type(value)]


def _coerce(key: str, value):
    """Check a YAML value against the schema type; ints are accepted for floats."""
    default = OPTIONS[key].default
    if isinstance(default, list):
        if not isinstance(value, list) or len(value) != len(default):
            raise ConfigError(f"{key}: must be a list of {len(default)} numbers, got {value!r}")
        return [_coerce_scalar(key, v, default[0]) for v in value]
    return _coerce_scalar(key, value, default)


def _coerce_scalar(key: str, value, default):
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            raise ConfigError(f"{key}: must be {_type_name(default)}, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, str) and value is None:  # `key:` or `key: none` in YAML
        return ""
    if type(value) is not type(default):
        raise ConfigError(f"{key}: must be {_type_name(default)}, got {value!r}")
    return value


def _validate(key: str, value):
    opt = OPTIONS[key]
    if opt.choices is not None and value not in opt.choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, opt.choices))}")
    if opt.check is not None and not opt.check(value):
        raise ConfigError(f"{key}: {value!r} {opt.check_msg}")


BASE_KEY = "base"  # a config's base recipe: a YAML file (path relative to the config's folder) it overrides


def load_yaml(path: str, _inheriting: tuple = ()) -> dict:
    """Read and check a config file, over its `base:` recipe if it names one (itself checked the same
    way, and free to name its own base); every problem is one ConfigError line naming the file."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value")
    cfg = _load_base(path, data.pop(BASE_KEY), _inheriting) if BASE_KEY in data else {}
    for key, value in data.items():
        if key not in OPTIONS:
            raise ConfigError(f"{path}: unknown key {key!r}")
        try:
            cfg[key] = _coerce(key, value)
            _validate(key, cfg[key])
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    return cfg


def _load_base(path: str, base, inheriting: tuple) -> dict:
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {BASE_KEY}: expected the path of a YAML file, got {base!r}")
    base_path = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), base))
    chain = inheriting + (os.path.abspath(path),)
    if base_path in chain:
        raise ConfigError(f"{path}: {BASE_KEY}: {base} is already in the chain of bases ({' -> '.join(chain)})")
    if not os.path.isfile(base_path):
        raise ConfigError(f"{path}: {BASE_KEY}: file not found: {base_path}")
    return load_yaml(base_path, chain)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _cli_type(default):
    if isinstance(default, bool):
        return _parse_bool
    return type(default)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports errors as a single line (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def script_keys(script: Optional[str]) -> list:
    """The schema keys `script` reads, in schema order; None = every key (library use, tests)."""
    if script is not None and script not in SCRIPTS:
        raise ValueError(f"unknown script {script!r}; the schema knows {', '.join(SCRIPTS)}")
    return [key for key, opt in OPTIONS.items() if script is None or script in opt.read_by]


def _add_schema_options(parser: argparse.ArgumentParser, defaults: dict, keys: list, script: Optional[str]):
    for section, options in SCHEMA.items():
        offered = [key for key in options if key in keys]
        if not offered:
            continue
        group = parser.add_argument_group(section)
        for key in offered:
            opt = options[key]
            default = defaults.get(key, opt.default)
            kwargs = dict(default=default, help=f"{opt.help} (default: %(default)s)")
            if isinstance(opt.default, list):
                kwargs.update(nargs=len(opt.default), type=type(opt.default[0]), metavar="V")
            else:
                kwargs.update(type=_cli_type(opt.default), metavar=key.upper())
            alias, alias_scripts = CLI_ALIASES.get(key, (None, ()))
            names = (f"--{key}", alias) if script in alias_scripts else (f"--{key}",)
            group.add_argument(*names, **kwargs)


def parse_args(argv=None, description: str = "", add_script_args: Optional[Callable] = None,
               default_config: str = DEFAULT_CONFIG, script: Optional[str] = None) -> argparse.Namespace:
    """Parse `--config` then the schema keys `script` reads; `add_script_args(parser)` adds its own options.

    The YAML may hold every schema key (one file serves all scripts); only the keys
    `script` reads become flags and attributes of the result.  script=None: all keys.
    """
    keys = script_keys(script)
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = os.path.basename(sys.argv[0]) or "conformer-ms"
    pre = OneLineParser(prog=prog, add_help=False)
    pre.add_argument("--config", default=default_config, help="YAML config file (default: %(default)s)")
    known, _ = pre.parse_known_args(argv)
    try:
        yaml_cfg = load_yaml(known.config)
    except ConfigError as e:
        pre.error(str(e))
    parser = OneLineParser(prog=prog, description=description, parents=[pre])
    if add_script_args is not None:
        add_script_args(parser)
    _add_schema_options(parser, yaml_cfg, keys, script)
    args = parser.parse_args(argv)
    for key in keys:
        try:
            _validate(key, getattr(args, key))
        except ConfigError as e:
            parser.error(f"--{e}")
    args.explicit_keys = _explicit_keys(parser, argv, keys, yaml_cfg, known.config)
    return args


class _EarlyParseError(Exception):
    pass


class _EarlyParser(argparse.ArgumentParser):
    def error(self, message):
        raise _EarlyParseError(message)


def early_value(key: str, argv: list, default_config: str = DEFAULT_CONFIG):
    """The value `key` takes in `parse_args(argv)` (command line > --config and its bases > default), for
    the one decision a script must make before it can import what its full parse needs (tools/bench.py and
    tools/memory.py define MindSpore cells; graph_kernel_fusion sets OpenMP threads before MindSpore loads).
    Any problem gives the default here: parse_args then reports it in one line."""
    parser = _EarlyParser(add_help=False)
    parser.add_argument("--config", default=default_config)
    parser.add_argument(f"--{key}", type=_cli_type(OPTIONS[key].default), default=None)
    try:
        given, _ = parser.parse_known_args(argv)
        value = getattr(given, key)
        return load_yaml(given.config).get(key, OPTIONS[key].default) if value is None else value
    except (_EarlyParseError, ConfigError):
        return OPTIONS[key].default


def _explicit_keys(parser, argv: list, keys: list, yaml_cfg: dict, config: str) -> dict:
    """{key: where the user set it}: the command line, or a --config given on it (not the default
    config); the keys a checkpoint's settings may fill in are the others (src/checkpoint_settings.py)."""
    wanted = {*keys, "config"}
    for action in parser._actions:  # pylint: disable=protected-access  (argparse has no public handle)
        if action.dest in wanted:
            action.default = argparse.SUPPRESS  # absent from the result unless given
    given = vars(parser.parse_args(argv))
    origin = {"config": "the command line"} if "config" in given else {}
    if "config" in given:
        origin.update({key: f"--config {config}" for key in yaml_cfg if key in keys})
    origin.update({key: "the command line" for key in keys if key in given})
    return origin


def resolved_config(cfg, script: Optional[str] = None) -> dict:
    """Every key `script` reads (None = every key), in schema order, with the value `cfg` holds."""
    return {key: getattr(cfg, key) for key in script_keys(script)}


def config_yaml(cfg, script: Optional[str] = None) -> str:
    """`resolved_config` as YAML, a file `--config` takes (the run record's config.yaml, `python -m src.config`)."""
    return yaml.safe_dump(resolved_config(cfg, script), sort_keys=False, default_flow_style=None)


def _readers(read_by: frozenset) -> str:
    if read_by == ALL:
        return "all"
    return ", ".join(os.path.splitext(os.path.basename(s))[0] for s in SCRIPTS if s in read_by)


def markdown_table() -> str:
    """The key table of docs/configuration.md, one row per schema key, grouped by section."""
    rows = ["| key | default | meaning | read by |", "| --- | --- | --- | --- |"]
    for section, options in SCHEMA.items():
        rows.append(f"| **{section}** | | | |")
        for key, opt in options.items():
            shown = [choice or "''" for choice in opt.choices or ()]
            meaning = opt.help + (f" ({' / '.join(shown)})" if opt.choices and len(opt.choices) < 6 else "")
            rows.append(f"| `{key}` | `{opt.default!r}` | {meaning.replace('|', '/')} | {_readers(opt.read_by)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--markdown"]:
        print(markdown_table())
    else:
        print(config_yaml(parse_args(description="print the configuration a script runs with, as YAML "
                                                 "(--markdown: the key table of docs/configuration.md)")), end="")
