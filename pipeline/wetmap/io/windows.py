"""TileGrid: square windows of size S with overlap O covering a raster, flush with its edges.

Tiles start every S − O pixels; the last row and column are moved back so that they end exactly
at the raster edge, so no tile reads padding and no strip is skipped. A raster smaller than S
gets one tile of the raster's own size along that axis.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from rasterio.windows import Window


def _starts(length: int, size: int, stride: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


@dataclass(frozen=True)
class Tile:
    """One window of a TileGrid, with its row and column in the grid."""

    row: int      # tile row / column in the grid of tiles
    col: int
    window: Window

    @property
    def slices(self) -> tuple[slice, slice]:
        w = self.window
        return (slice(int(w.row_off), int(w.row_off + w.height)), slice(int(w.col_off), int(w.col_off + w.width)))


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of `size` px overlapping by `overlap` px, covering a raster edge to edge."""

    width: int
    height: int
    size: int
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0 or not 0 <= self.overlap < self.size:
            raise ValueError(f"tile size {self.size} and overlap {self.overlap}: need 0 <= overlap < size")

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def row_starts(self) -> list[int]:
        return _starts(self.height, self.size, self.stride)

    @property
    def col_starts(self) -> list[int]:
        return _starts(self.width, self.size, self.stride)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of tiles."""
        return len(self.row_starts), len(self.col_starts)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def __iter__(self) -> Iterator[Tile]:
        """Row-major order: rows of tiles top to bottom, so output rows complete in order."""
        for i in range(self.shape[0]):
            yield from self.row(i)

    def row(self, i: int) -> list[Tile]:
        """The tiles of tile row `i`, left to right."""
        h, w = min(self.size, self.height), min(self.size, self.width)
        r = self.row_starts[i]
        return [Tile(i, j, Window(c, r, w, h)) for j, c in enumerate(self.col_starts)]


def blocks(width: int, height: int, size: int) -> Iterator[Window]:
    """Non-overlapping windows of at most `size` covering a raster once (edge blocks are smaller).

    For counting and streaming passes, where a flush TileGrid would visit edge pixels twice.
    """
    for r in range(0, height, size):
        for c in range(0, width, size):
            yield Window(c, r, min(size, width - c), min(size, height - r))
