"""Tile grids: full coverage edge to edge, overlaps, windows."""

import numpy as np
import pytest

from wetmap.io.windows import TileGrid


@pytest.mark.parametrize("width,height,size,overlap", [(300, 200, 64, 0), (300, 200, 64, 16), (64, 64, 64, 8),
                                                       (50, 70, 64, 8), (257, 513, 128, 32)])
def test_tiles_cover_every_pixel_and_stay_inside(width: int, height: int, size: int, overlap: int) -> None:
    grid = TileGrid(width, height, size, overlap)
    hits = np.zeros((height, width), int)
    for tile in grid:
        w = tile.window
        assert w.col_off >= 0 and w.row_off >= 0
        assert w.col_off + w.width <= width and w.row_off + w.height <= height
        hits[tile.slices] += 1
    assert hits.min() >= 1
    # The last row and column of tiles sit flush with the raster edge.
    assert max(t.window.col_off + t.window.width for t in grid) == width
    assert max(t.window.row_off + t.window.height for t in grid) == height


def test_no_overlap_covers_exactly_once_when_size_divides() -> None:
    grid = TileGrid(256, 128, 64, 0)
    hits = np.zeros((128, 256), int)
    for tile in grid:
        hits[tile.slices] += 1
    assert (hits == 1).all()
    assert grid.shape == (2, 4) and len(grid) == 8


def test_overlap_counts_outside_overlaps_are_one() -> None:
    grid = TileGrid(200, 200, 64, 16)
    hits = np.zeros((200, 200), int)
    for tile in grid:
        hits[tile.slices] += 1
    starts = grid.col_starts
    assert starts[:3] == [0, 48, 96] and starts[-1] == 200 - 64
    # Pixels in the middle of the first tile (not in any overlap) are covered exactly once.
    assert (hits[16:48, 16:48] == 1).all()


def test_bad_overlap_rejected() -> None:
    with pytest.raises(ValueError):
        TileGrid(100, 100, 32, 32)
