"""SIGTERM / SIGINT during training: the first signal stops the loop after the step in flight (the
trainer checkpoints that position and raises Interrupted), a second ends the process at once, even
mid-step, and under data parallelism every rank stops after the same step (how: docs/development.md
"How it works: stopping on a signal")."""
import os
import signal
import socket
import threading

import numpy as np
import mindspore as ms
from mindspore import nn, ops

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """Training stopped on a signal; `path` is the checkpoint written at the stop ('' on ranks > 0)."""

    def __init__(self, signum: int, path: str, position: str):
        self.signum, self.path, self.position = signum, path, position
        super().__init__(f"stopped by {signal.Signals(signum).name} after {position}")

    @property
    def status(self) -> int:
        return 128 + self.signum  # what the shell reports for a process the signal ended (143, 130)


class SumOverRanks(nn.Cell):
    """A small vector summed over the ranks, in a graph (GRAPH mode); SUM of float32 because the CPU
    AllReduce supports nothing else."""

    def __init__(self):
        super().__init__()
        self.all_reduce = ops.AllReduce(ops.ReduceOp.SUM)

    def construct(self, x):
        return self.all_reduce(x)


class StopRequest:
    """Watches SIGTERM/SIGINT between `install()` and `uninstall()`; `signum` is the first one seen."""

    def __init__(self, prog: str = "train.py", rank_size: int = 1, announce: bool = True):
        self.prog, self.rank_size, self.announce = prog, rank_size, announce
        self.signum = 0
        self._saved = None
        self._sum = SumOverRanks() if rank_size > 1 else None

    def install(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be handled in the main thread; then they act as usual
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        handlers = {s: signal.signal(s, _ignore_here) for s in STOP_SIGNALS}
        wakeup = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self._saved = (handlers, wakeup, reader, writer)
        threading.Thread(target=self._watch, args=(reader,), name="stop-signals", daemon=True).start()
        return self

    def uninstall(self) -> None:
        if self._saved is None:
            return
        handlers, wakeup, reader, writer = self._saved
        self._saved = None
        signal.set_wakeup_fd(wakeup)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        writer.close()  # the watcher's recv returns b"" and it ends
        reader.close()

    def _watch(self, reader) -> None:
        while True:
            try:
                data = reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in STOP_SIGNALS:
                    self._received(signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.signum:
            _write(2, f"{self.prog}: {name} again: stopped at once, without a checkpoint of the step in "
                        "flight\n")
            os._exit(128 + signum)  # pylint: disable=protected-access  (no cleanup: that is what was asked)
        self.signum = signum
        if self.announce:
            _write(1, f"{self.prog}: {name}: stopping after the step in flight with a checkpoint "
                        f"({name} again stops at once)\n")

    def agreed(self) -> int:
        """The signal to stop on after this step (0 = go on), the same on every rank."""
        if self._saved is not None:
            for signum in STOP_SIGNALS:
                signal.signal(signum, _ignore_here)
        if self._sum is None:
            return self.signum
        # one-hot over STOP_SIGNALS: the count of ranks that got each; the first signal any rank got wins
        seen = np.array([self.signum == s for s in STOP_SIGNALS], np.float32)
        counts = self._sum(ms.Tensor(seen)).asnumpy()
        return next((int(s) for s, n in zip(STOP_SIGNALS, counts) if n > 0), 0)

    def barrier(self) -> None:
        """Wait for every rank: the others exit only once rank 0 has written the checkpoint (msrun
        kills all workers as soon as one exits non-zero)."""
        if self._sum is not None:
            self._sum(ms.Tensor(np.zeros(len(STOP_SIGNALS), np.float32))).asnumpy()


def _write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except OSError:  # a closed console must not stop the stop
        pass


def _ignore_here(signum, frame):  # pylint: disable=unused-argument
    """The watcher thread has already seen the signal; in the main thread it must only not raise
    KeyboardInterrupt or end the process (the defaults)."""
