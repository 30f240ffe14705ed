"""The checkpoints a training run keeps: the newest few of its full state, and the best by validation top-1.
Every file is written atomically (src/io.py), so killing a run at any moment leaves only
complete files, and a failed write raises one WriteError line that names the file and the
checkpoint still intact.  Only rank 0 writes (`enabled=False` on other ranks).
"""
import json
import os
import re

from src.checkpoint import save_checkpoint_atomic
from src.io import TEMP_PREFIX, WriteError, remove_quietly, write_json_atomic


class CheckpointKeeper:
    """Current checkpoints in `ckpt_root_dir` (the newest `keep` kept) and the `best_num`
    best by validation top-1 in `best_dir`, indexed in best_dir/best.json."""

    def __init__(self, ckpt_dir: str, best_dir: str, prefix: str, keep: int, best_num: int,
                 enabled: bool = True, meta: dict = None):
        """`meta`: entries every checkpoint carries (the run's settings, src/checkpoint_settings.py)."""
        self.ckpt_dir, self.best_dir, self.prefix = ckpt_dir, best_dir, prefix
        self.meta = dict(meta or {})
        self.keep, self.best_num, self.enabled = keep, best_num, enabled
        self._index_path = os.path.join(best_dir, "best.json")
        if enabled:
            self._remove_stale_temp_files()
        self._current = self._existing_current()
        self._best = self._read_best_index()

    def _remove_stale_temp_files(self) -> None:
        """Temp files a killed run left behind: never a checkpoint, only a partial write."""
        for directory in (self.ckpt_dir, self.best_dir):
            if os.path.isdir(directory):
                for name in os.listdir(directory):
                    if name.startswith(TEMP_PREFIX):
                        os.remove(os.path.join(directory, name))

    def has_checkpoints(self) -> bool:
        """True when the folders already hold this run's checkpoints (a new run must not overwrite them)."""
        return bool(self._current or self._best)

    def _existing_current(self) -> list:
        """Checkpoints of an earlier run of the same prefix, oldest first (by modification time)."""
        if not os.path.isdir(self.ckpt_dir):
            return []
        names = [n for n in os.listdir(self.ckpt_dir) if n.startswith(self.prefix + "-") and n.endswith(".ckpt")]
        paths = [os.path.join(self.ckpt_dir, n) for n in names]
        return sorted(paths, key=os.path.getmtime)

    def current_path(self, epoch: int, global_step: int) -> str:
        """The name of the current checkpoint after `global_step` in `epoch` (0-based)."""
        return os.path.join(self.ckpt_dir, f"{self.prefix}-e{epoch + 1:04d}-s{global_step:08d}.ckpt")

    def newest_first(self) -> list:
        """[(epoch, global_step, path)] of the current checkpoints on disk, the furthest position first: by
        the position in the name, which every node of a shared folder sees alike (unlike modification times)."""
        pattern = re.compile(re.escape(self.prefix) + r"-e(\d{4,})-s(\d{8,})\.ckpt")
        found = []
        for path in self._existing_current():
            match = pattern.fullmatch(os.path.basename(path))
            if match:
                found.append((int(match.group(1)) - 1, int(match.group(2)), path))
        return sorted(found, key=lambda entry: entry[:2], reverse=True)

    def _read_best_index(self) -> dict:
        if not os.path.isfile(self._index_path):
            return {}
        with open(self._index_path) as f:
            return {path: top1 for path, top1 in json.load(f).items() if os.path.isfile(path)}

    def save_current(self, train_state, epoch: int, step_in_epoch: int, global_step: int, extra: dict) -> str:
        """Full training state (weights, optimizer with its global_step, EMA, loss scale) and the
        position in the epoch; prunes the oldest beyond `keep`."""
        if not self.enabled:
            return ""
        path = self.current_path(epoch, global_step)
        try:
            save_checkpoint_atomic(train_state, path,
                                   append_dict=dict(self.meta, **extra, epoch=epoch, step_in_epoch=step_in_epoch))
        except WriteError as e:
            last = self.last_complete()
            raise WriteError(path, e.cause, f"the last complete checkpoint, {last}, is untouched" if last
                             else "no complete checkpoint of this run was written before") from None
        if path in self._current:
            self._current.remove(path)
        self._current.append(path)
        while len(self._current) > self.keep:
            os.remove(self._current.pop(0))
        return path

    def last_complete(self) -> str:
        """The newest current checkpoint on disk ('' if none)."""
        return self._current[-1] if self._current else ""

    def offer_best(self, weights: list, top1: float, epoch: int) -> str:
        """Save `weights` ([{'name', 'data'}]) if top-1 ranks among the best; returns the path or ''.

        The new file and then the index are written before the displaced one is removed, so a
        failed write leaves the earlier best checkpoints and best.json as they were."""
        if not self.enabled:
            return ""
        ranked = sorted(self._best.values(), reverse=True)
        if len(ranked) >= self.best_num and top1 <= ranked[-1]:
            return ""
        path = os.path.join(self.best_dir, f"{self.prefix}-best-e{epoch + 1:04d}-top1-{top1:.4f}.ckpt")
        intact = "the earlier best checkpoints and best.json are untouched"
        try:
            save_checkpoint_atomic(weights, path, append_dict=dict(self.meta, epoch=epoch, top1=float(top1)))
        except WriteError as e:
            raise WriteError(path, e.cause, intact) from None
        best = dict(self._best, **{path: float(top1)})
        displaced = sorted(best, key=best.get)[:max(len(best) - self.best_num, 0)]
        for worst in displaced:
            del best[worst]
        try:
            write_json_atomic(self._index_path, best)
        except WriteError as e:
            remove_quietly(path)  # not indexed: the index on disk still describes the files on disk
            raise WriteError(self._index_path, e.cause, intact) from None
        self._best = best
        for worst in displaced:
            if os.path.exists(worst):
                os.remove(worst)
        return path
