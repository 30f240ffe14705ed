"""How every entry point ends: `run_main` is the one place the project's errors (src/errors.py) are
caught and printed as one line, and a reader closing stdout early (`infer.py DATA | head -n 1`: Python
ignores SIGPIPE, so writes raise BrokenPipeError) ends the script quietly.  MindSpore-free, so the
onnxruntime scripts use it too."""
import os
import signal
import sys

from src.errors import ConformerError

# the status of a process that SIGPIPE stopped, as the shell reports it (`yes | head` under pipefail)
CLOSED_STATUS = 128 + signal.SIGPIPE


def discard_stdout() -> None:
    """Point stdout at /dev/null: its reader has gone, and nothing written from now on may fail."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class Console:
    """print() to stdout that survives the reader going away: the work (a JSON file, ...) goes on
    and `closed` tells the caller that the rest of the lines were not read."""

    def __init__(self):
        self.closed = False

    def line(self, text: str) -> None:
        if self.closed:
            return
        try:
            print(text, flush=True)
        except BrokenPipeError:
            discard_stdout()
            self.closed = True


def run_main(main, prog: str) -> int:
    """main()'s exit status.  The one place an entry point's errors are caught: a ConformerError is
    printed as `PROG: error: MESSAGE` (status 2); a reader that closed stdout before main() finished
    writing it ends the script quietly with CLOSED_STATUS (no traceback), as a tool stopped by SIGPIPE."""
    try:
        status = main()
        sys.stdout.flush()  # surface a broken pipe here, not in the interpreter's exit handler
        return status
    except ConformerError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        discard_stdout()
        return CLOSED_STATUS
