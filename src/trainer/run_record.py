"""The run record in summary_root_dir: config.yaml, the resolved configuration (`--config` takes it and
repeats the run), and run.json, what produced the run, one entry per start (a resumed run adds one):
command line, working directory, start time, resumed-from checkpoint, Python/MindSpore/package
versions, device target and count, the repository's revision when it is a git checkout.
"""
import datetime
import json
import os
import platform
import shlex
import subprocess
from importlib import metadata

from src.config import REPO_ROOT, TRAIN, config_yaml
from src.io import write_atomic, write_json_atomic

PACKAGES = ("mindspore", "numpy", "Pillow", "PyYAML", "tensorboardX")
CONFIG_FILE, RECORD_FILE = "config.yaml", "run.json"


def command_line(argv: list) -> str:
    return shlex.join(["python", *argv])


# what train.py prints above the resolved configuration, each key indented below it (demo.py folds the block)
CONFIG_HEADER = "resolved configuration (also in summary_root_dir/config.yaml):"


def record_yaml(cfg, argv: list) -> str:
    """config.yaml's text: the resolved configuration, after a comment with the command that started the run."""
    return (f"# the resolved configuration of the run started by:\n#   {command_line(argv)}\n"
            "# python train.py --config THIS_FILE repeats it\n" + config_yaml(cfg, TRAIN))


def repository_revision() -> str:
    """`git rev-parse HEAD` of the code (+ "-dirty" with uncommitted changes); '' outside a git checkout
    or without git."""
    try:
        head = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("-dirty" if dirty else "")


def _versions() -> dict:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def write_run_record(cfg, argv: list, device_num: int, resumed_from: str) -> None:
    """Rewrite config.yaml and add this start to run.json (both atomically)."""
    write_atomic(os.path.join(cfg.summary_root_dir, CONFIG_FILE), record_yaml(cfg, argv))
    path = os.path.join(cfg.summary_root_dir, RECORD_FILE)
    starts = []
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                starts = json.load(f)["starts"]
        except (OSError, ValueError, KeyError, TypeError):
            starts = []  # an unreadable record of an earlier start is replaced, not fatal
    starts.append({"start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "command": argv, "cwd": os.getcwd(), "resumed_from": resumed_from,
                   "config": CONFIG_FILE, "device_target": cfg.device_target, "device_num": device_num,
                   "host": platform.node(), "revision": repository_revision(), "versions": _versions()})
    write_json_atomic(path, {"starts": starts})
