"""The project's own exceptions and warnings, shared by every layer.

Each message names the file, field or key at fault and what was expected, so a command-line user
sees one line that says what to fix (the CLI prints ``str(error)`` without a traceback).
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad content in a dataset file; the message names the file and what was expected."""


class LayoutWarning(UserWarning):
    """Something in the dataset folder was skipped or filled in; the message says what and why."""


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space, so a
    library's multi-line message fits the one-line errors above."""
    return " ".join(str(text).split())
