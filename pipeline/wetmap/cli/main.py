"""The entry point: every error as one line on stderr, its exit code chosen here by its class.

Bad input (a WetmapError, GDAL refusing a file, a full disk, a usage error) is exit 2; a busy or
failed job exit 1; an interrupt 130; a bug keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

import click

from wetmap.cli.commands import cli
from wetmap.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, JobBusy, JobFailed, WetmapError, WetmapWarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Every warning as one line on stderr: wetmap's own as they are, other libraries' with their kind."""
    text = " ".join(str(message).split())
    if issubclass(category, WetmapWarning):
        click.echo(f"wetmap: warning: {text}", err=True)
    else:
        click.echo(f"wetmap: warning: {category.__name__}: {text}", err=True)


class _Held:
    """What C libraries printed to file descriptor 2, and whether to show it afterwards."""

    show = True


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[_Held]:
    """Hold back what C libraries print straight to file descriptor 2 while a command runs.

    libtiff (inside GDAL) prints "_tiffWriteProc: No space left on device." there and PROJ
    "crs not found", past Python, before wetmap's one-line error says the same with the file's
    name. The held text is shown when the command ends, unless the body clears `show` (a user
    error, whose one line replaces it). Python's own stderr keeps writing live.
    """
    held = _Held()
    try:
        sys.stderr.flush()
        uses_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # stderr already captured elsewhere (a test)
        uses_fd2 = False
    saved = os.dup(2)
    python_stderr = sys.stderr
    live = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace") if uses_fd2 else None
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        sys.stderr = live or python_stderr
        try:
            yield held
        except BaseException:
            held.show = True  # a bug: what the libraries printed comes before the traceback
            raise
        finally:
            sys.stderr = python_stderr
            if live is not None:
                live.close()
            os.dup2(saved, 2)
            os.close(saved)
            if held.show:
                sink.seek(0)
                os.write(2, sink.read())


def exit_status(exc: Exception) -> tuple[int, str] | None:
    """The exit code and one-line message for an error a user or a scheduler can act on; None
    for a bug (whose traceback is kept). The one place that maps error classes to exit codes."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    from wetmap.io.failures import write_failure

    if isinstance(exc, WetmapError):
        return exc.exit_code, f"error: {exc}"
    if isinstance(exc, (JobBusy, JobFailed)):
        return exc.exit_code, str(exc)
    if isinstance(exc, (RasterioError, CPLE_BaseError)):  # GDAL refusing a file
        return EXIT_BAD_INPUT, f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if isinstance(exc, OSError):  # a full disk, a read-only or missing place
        failure = write_failure(getattr(exc, "filename", None) or "output", exc)
        return None if failure is None else (failure.exit_code, f"error: {failure}")
    if isinstance(exc, click.exceptions.Abort):  # Ctrl-C, as click reports it
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, click.UsageError):
        where = f"{exc.ctx.info_name}: " if exc.ctx is not None and exc.ctx.parent is not None else ""
        return EXIT_BAD_INPUT, f"error: {where}{' '.join(exc.format_message().split())} (see --help)"
    if isinstance(exc, click.ClickException):
        return exc.exit_code, f"error: {' '.join(exc.format_message().split())}"
    return None


def main() -> None:
    """Entry point: one line and exit code 2 for bad input, a full disk or an unwritable place;
    tracebacks only for bugs."""
    from rasterio.errors import NotGeoreferencedWarning

    warnings.showwarning = _show_warning
    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)  # open_raster says "no CRS" itself
    code, error = 0, None
    with _native_stderr_held() as held:
        try:
            code = cli.main(standalone_mode=False) or 0
        except Exception as exc:  # noqa: BLE001 - sorted by class in exit_status; a bug is re-raised
            status = exit_status(exc)
            if status is None:
                raise
            code, error = status
        held.show = error is None or code == EXIT_INTERRUPTED
    if error is not None:
        click.echo(f"wetmap: {error}", err=True)
    sys.exit(code)
