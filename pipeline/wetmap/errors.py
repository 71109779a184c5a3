"""One error type for everything a user can get wrong.

The CLI turns a WetmapError into a single line on stderr and exit code 2, so schedulers and
people both see what is wrong (which file, which key) without a traceback.
"""

from __future__ import annotations

from os import PathLike

EXIT_BAD_INPUT = 2


class WetmapError(Exception):
    """A problem with the user's input: its message is one line naming the file or key."""

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        text = " ".join(str(message).split())
        super().__init__(f"{path}: {text}" if path is not None else text)


class WetmapWarning(UserWarning):
    """Something the user should know about a run that still goes ahead (one line on stderr)."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message for a one-line error: its first line, cut to `limit` characters
    (SQLite quotes whole statements), or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
