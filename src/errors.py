"""The one base class of the errors a user can act on.

Each is raised with a one-line message that names the file or option and what is wrong; every
entry point catches ConformerError once (src/runtime/console.py: run_main) and prints
`PROG: error: MESSAGE`, so no such problem ends in a traceback.  The subclasses keep the built-in
class they had before (ValueError, RuntimeError, ...) so `except ValueError` still catches them.
"""


class ConformerError(Exception):
    """A problem in the input, the options or the environment, described in one line."""


def first_line(error: Exception) -> str:
    """The first line of an exception's message (MindSpore and onnxruntime write pages)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
