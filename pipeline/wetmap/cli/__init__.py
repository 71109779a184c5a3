"""The `wetmap` command line: `commands` (one per stage), shared `options`, and `main`."""

from wetmap.cli.commands import cli
from wetmap.cli.main import main

__all__ = ["cli", "main"]
