"""The errors a user or a scheduler sees, each with its exit code.

The CLI turns each into a single line on stderr and its class's `exit_code` (`wetmap.cli.main`,
the one place that decides), so schedulers and people both see what is wrong (which file, which
key) without a traceback: 2 for bad input, 1 for a job that is busy or failed.
"""

from __future__ import annotations

from os import PathLike

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class WetmapError(Exception):
    """A problem with the user's input: its message is one line naming the file or key."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, path: str | PathLike[str] | None = None) -> None:
        text = " ".join(str(message).split())
        super().__init__(f"{path}: {text}" if path is not None else text)


class JobBusy(Exception):
    """Another run of the same job holds its lock: try later (a scheduler retries on exit 1)."""

    exit_code = EXIT_FAILED


class JobFailed(Exception):
    """A scheduled job that did not complete for a reason other than its input; its log holds
    the traceback, the scheduler gets exit 1 and one line."""

    exit_code = EXIT_FAILED


class WetmapWarning(UserWarning):
    """Something the user should know about a run that still goes ahead (one line on stderr)."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's message for a one-line error: its first line, cut to `limit` characters
    (SQLite quotes whole statements), or its type's name when it has none."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
