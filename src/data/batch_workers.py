"""Worker processes that compute whole batches outside the interpreter lock of the process that reads
them: started once per run, fed a batch source (an epoch's training batches, the evaluation batches
or the images of a folder to infer), each batch computed by one worker and returned in order, a fixed
number in flight. What they cost and hold: docs/development.md
"How it works: the data pipeline". MindSpore-free (the workers never import MindSpore)."""
import atexit
import copy
import hashlib
import itertools
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection

import numpy as np

from src.data.folder import DatasetError

_PATHS, _SOURCE, _BATCH = "paths", "source", "batch"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_POLL_SECONDS = 1.0  # how often the training process, waiting for a batch, checks that its worker lives


class DataWorkerError(DatasetError):
    """A data worker process died or failed: one line naming it."""


def _to_files(computed: tuple, folder: str, name: str) -> tuple:
    """A `compute` result with the batch's arrays written to files in `folder` (on /dev/shm: memory),
    replaced by (path, dtype, shape): the training process then reads each with one system call,
    where a pipe hands it over in 64 KiB pieces, each of which waits for the interpreter lock."""
    batch, unreadable, error = computed
    if batch is not None:
        refs = []
        for i, array in enumerate(batch):
            path = os.path.join(folder, f"{name}-{i}")
            array.tofile(path)
            refs.append((path, array.dtype.str, array.shape))
        batch = tuple(refs)
    return batch, unreadable, error


def _from_files(computed: tuple) -> tuple:
    batch, unreadable, error = computed
    if batch is not None:
        arrays = []
        for path, dtype, shape in batch:
            arrays.append(np.fromfile(path, dtype).reshape(shape))
            os.unlink(path)
        batch = tuple(arrays)
    return batch, unreadable, error


def _serve(tasks: Connection, results: Connection, folder: str) -> None:
    """A worker: hold the path lists and the latest batch source it was sent, compute the batches it is
    asked for and send each result (its arrays in files of `folder`) or a failure's traceback back, in
    order; end when the reading process closes its end (or is gone), removing `folder`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the reader stops
    paths, source, decoded = {}, None, {}
    while True:
        try:
            kind, payload = tasks.recv()
        except EOFError:
            break
        if kind == _PATHS:
            key, payload = payload
            paths[key] = pickle.loads(payload)
        elif kind == _SOURCE:
            key, payload = payload
            source = pickle.loads(payload)
            source.paths = paths[key]
            if getattr(source, "decoded", None) is not None:  # a store per worker, kept across the epochs' sources
                source.decoded = decoded.setdefault(source.decoded.budget, source.decoded)
        else:
            try:
                computed = source.compute(payload)
            except Exception:  # noqa: BLE001 - a bug, not bad data: its traceback goes to the training process
                results.send((payload, None, traceback.format_exc()))
                continue
            try:
                results.send((payload, _to_files(computed, folder, f"{os.getpid()}-{payload}"), ""))
            except OSError as e:  # /dev/shm full: a container's is 64 MiB unless given more
                results.send((payload, None, f"cannot write the batch to {folder}: {e.strerror} (in a container, "
                                             "give it more shared memory, e.g. docker run --shm-size 8g)"))
    shutil.rmtree(folder, ignore_errors=True)  # batches the training process will never read


class _Worker:
    """One worker process (`python -m src.data.batch_workers`), two pipes to it."""

    def __init__(self, index: int, folder: str):
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        # a fresh interpreter, not a fork: forking a process whose MindSpore threads hold locks can leave
        # the child deadlocked, and multiprocessing's spawn would re-import the training script (MindSpore)
        # in this process's directory, so that relative image paths name the same files; the repository on
        # the import path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([_REPO, *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.process = subprocess.Popen([sys.executable, "-m", "src.data.batch_workers", str(task_r), str(result_w),
                                         folder], env=env, pass_fds=(task_r, result_w), stdin=subprocess.DEVNULL)
        os.close(task_r)
        os.close(result_w)
        self.index, self.tasks, self.results = index, Connection(task_w, readable=False), Connection(result_r, writable=False)

    def send(self, message) -> None:
        try:
            self.tasks.send(message)
        except OSError:  # a broken pipe: the worker is gone
            self.receive()

    def receive(self) -> tuple:
        """The worker's next result; DataWorkerError if it died."""
        while True:
            try:
                if self.results.poll(_POLL_SECONDS):
                    got, computed, failure = self.results.recv()
                    return got, computed and _from_files(computed), failure
            except (EOFError, OSError):
                self.process.wait(timeout=10)
            code = self.process.poll()
            if code is not None:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                raise DataWorkerError(f"data worker {self.index} (pid {self.process.pid}) {how}; out of memory? "
                                      "(data_workers_mode in docs/training.md)")

    def close(self) -> None:
        self.tasks.close()  # the worker ends at the end of its task pipe
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.results.close()


class BatchWorkers:
    """`workers` processes computing batches of sources such as `_TrainBatches` (src/data/train_batches.py)
    and `EvalBatches` (src/data/eval_batches.py): objects with `paths`, `__len__` and `compute(b)`, at
    most `in_flight` batches ahead of the one asked for. One pool serves every epoch of a run and its
    evaluation; a pipeline asks through `WorkerBatches` or `worker_batches`. `close()` ends the
    processes (also at interpreter exit)."""

    def __init__(self, workers: int, in_flight: int = 0):
        # finished batches wait in files here: memory (tmpfs) where /dev/shm exists
        self.folder = tempfile.mkdtemp(prefix="conformer-batches-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.workers = [_Worker(i, self.folder) for i in range(workers)]
        self.in_flight = in_flight or 2 * workers  # one being computed and one waiting, per worker
        self._paths = {}  # digest of a pickled path list -> its key: the lists the workers hold
        self._source = None  # the token of the source whose batches are in flight
        self._pending = deque()  # (worker, batch) submitted and not yet read, in order
        self._next = 0  # the next batch to submit
        self._turn = itertools.cycle(self.workers)
        self._lock = threading.Lock()
        atexit.register(self.close)

    def __deepcopy__(self, memo):
        return self  # MindSpore deep-copies the pipeline to iterate it: the copies share the processes

    def pids(self) -> list:
        return [worker.process.pid for worker in self.workers]

    def batch(self, token, source, b: int):
        """Batch `b` of `source` computed by a worker (`token` names the source, the same for its
        copies): its `compute` result. Asking for a batch other than the one after the last, or of
        another source, first drops the batches in flight."""
        with self._lock:
            if token != self._source or not self._pending or self._pending[0][1] != b:
                self._restart(token, source, b)
            while self._next < len(source) and len(self._pending) < self.in_flight:
                worker = next(self._turn)
                worker.send((_BATCH, self._next))
                self._pending.append((worker, self._next))
                self._next += 1
            worker, expected = self._pending.popleft()
            got, computed, failure = worker.receive()
        assert got == expected, (got, expected)  # each worker answers its tasks in order
        if failure:  # the exception's own line; its traceback is a bug report's, not the user's
            raise DataWorkerError(f"data worker {worker.index} failed on batch {got}: "
                                  f"{failure.strip().splitlines()[-1]}")
        return computed

    def _restart(self, token, source, b: int) -> None:
        for worker, _ in self._pending:
            worker.receive()
        self._pending.clear()
        paths = pickle.dumps(source.paths)
        digest = hashlib.sha256(paths).digest()
        if digest not in self._paths:  # training's list and evaluation's, the same every epoch: each sent once
            self._paths[digest] = len(self._paths)
            self._broadcast((_PATHS, (self._paths[digest], paths)))
        clone = copy.copy(source)  # what the workers get: no paths (sent apart), no counters of this process
        clone.paths = None
        if hasattr(clone, "skipped"):
            clone.skipped = None
        self._broadcast((_SOURCE, (self._paths[digest], pickle.dumps(clone))))
        self._source, self._next = token, b

    def _broadcast(self, message) -> None:
        for worker in self.workers:
            worker.send(message)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        atexit.unregister(self.close)


class WorkerBatches:
    """Random-access source for MindSpore's GeneratorDataset: batch b of `source` (a `_TrainBatches`)
    computed by `pool`, its unreadable files recorded here, in the training process."""

    _tokens = itertools.count()

    def __init__(self, source, pool: BatchWorkers):
        self.source, self.pool, self.token = source, pool, next(self._tokens)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, b):
        try:
            computed = self.pool.batch(self.token, self.source, int(b))
        except DataWorkerError as e:  # MindSpore re-raises it as a traceback: SkippedImages.one_line_errors
            self.source.skipped.error = e
            raise
        return self.source.deliver(computed)


def worker_batches(source, pool: BatchWorkers):
    """The batches of `source` (`deliver(compute(b))` for b in order) computed by `pool`, those without
    a row left out; a new token per call, so every pass asks for its batches afresh."""
    token = object()
    for b in range(len(source)):
        batch = source.deliver(pool.batch(token, source, b))
        if len(batch[0]):
            yield batch


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False), sys.argv[3])
