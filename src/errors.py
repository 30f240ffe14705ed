"""The one base class of the errors a user can act on: each is raised with a one-line message naming
the file or option and what is wrong, and every entry point catches ConformerError once
(src/runtime/console.py) and prints `PROG: error: MESSAGE`.  The subclasses keep the built-in class
they had before (ValueError, RuntimeError, ...), so `except ValueError` still catches them."""


class ConformerError(Exception):
    """A problem in the input, the options or the environment, described in one line."""


def first_line(error: Exception) -> str:
    """The first line of an exception's message (MindSpore and onnxruntime write pages)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
