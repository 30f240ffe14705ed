"""Threads of the reading process that compute whole batches ahead of the one asked for: the
`data_workers_mode: thread` counterpart of `BatchWorkers` (src/data/batch_workers.py), with its
interface, for the evaluation batches. PIL releases the interpreter lock while decoding and resizing.
MindSpore-free."""
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor


class BatchThreads:
    """`workers` threads computing batches of sources such as `EvalBatches` (`compute(b)`, `__len__`), at
    most `in_flight` ahead of the one asked for, returned in order. `close()` ends the threads."""

    def __init__(self, workers: int, in_flight: int = 0):
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="conformer-batches")
        self.in_flight = in_flight or 2 * workers  # one being computed and one waiting, per thread
        self._source = None  # the token of the source whose batches are in flight
        self._pending = deque()  # (batch, future) submitted and not yet read, in order
        self._next = 0
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):
        return self  # MindSpore deep-copies the pipeline to iterate it: the copies share the threads

    def batch(self, token, source, b: int):
        """Batch `b` of `source` (`token` names the source): its `compute` result. Asking for a batch
        other than the one after the last, or of another source, first drops the batches in flight."""
        with self._lock:
            if token != self._source or not self._pending or self._pending[0][0] != b:
                for _, future in self._pending:
                    future.cancel()
                self._pending.clear()
                self._source, self._next = token, b
            while self._next < len(source) and len(self._pending) < self.in_flight:
                self._pending.append((self._next, self.pool.submit(source.compute, self._next)))
                self._next += 1
            _, future = self._pending.popleft()
        return future.result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
