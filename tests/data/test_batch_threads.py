"""src/data/batch_threads.py: batches computed ahead in threads, handed out in order; a request out of
order (a replay, a resume) or of another source drops the batches in flight."""
import threading

import pytest

from src.data.batch_threads import BatchThreads


class Squares:
    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.computed, self.threads = n, fail_at, [], set()

    def __len__(self):
        return self.n

    def compute(self, b):
        if b == self.fail_at:
            raise ValueError(f"batch {b}")
        self.computed.append(b)
        self.threads.add(threading.current_thread().name)
        return b * b


def test_in_order_ahead_in_threads_and_restarted_by_a_request_out_of_order():
    pool = BatchThreads(2)
    try:
        source, token = Squares(10), object()
        assert [pool.batch(token, source, b) for b in range(3)] == [0, 1, 4]
        assert len(source.computed) <= 3 + pool.in_flight  # ahead, but at most in_flight
        assert all(name.startswith("conformer-batches") for name in source.threads)
        assert pool.batch(token, source, 7) == 49  # skipped ahead: a restart at 7
        assert pool.batch(token, source, 0) == 0  # and back: a replay
        other = Squares(3)
        assert [pool.batch(object(), other, b) for b in range(3)] == [0, 1, 4]
        assert max(other.computed) == 2  # never beyond the source's end
    finally:
        pool.close()


def test_a_failing_compute_raises_its_own_error_in_the_reader():
    pool = BatchThreads(1)
    try:
        source, token = Squares(4, fail_at=1), object()
        assert pool.batch(token, source, 0) == 0
        with pytest.raises(ValueError, match="batch 1"):
            pool.batch(token, source, 1)
    finally:
        pool.close()
