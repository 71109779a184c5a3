"""Blending overlapping tile outputs into full-width strips (prediction and the cloud detector)."""

from __future__ import annotations

import numpy as np

from wetmap.io.windows import Tile, TileGrid


def _ramp(n: int, overlap: int, crop: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D weights along one axis of a tile: raised-cosine ramps on the overlapped sides."""
    w = np.ones(n, np.float64)
    width = max(1, overlap - 2 * crop)
    rise = np.sin(0.5 * np.pi * (np.arange(1, width + 1) / (width + 1))) ** 2
    edge = np.concatenate([np.zeros(crop), rise])[: n // 2]
    if ramp_start:
        w[: len(edge)] = edge
    if ramp_end:
        w[n - len(edge):] = edge[::-1]
    return w


def blend_weights(tile: Tile, grid: TileGrid, crop: int) -> np.ndarray:
    """(h,w) float32 weights of one tile: ramps only towards neighbouring tiles."""
    rows, cols = grid.shape
    win = tile.window
    wy = _ramp(int(win.height), grid.overlap, crop, tile.row > 0, tile.row < rows - 1)
    wx = _ramp(int(win.width), grid.overlap, crop, tile.col > 0, tile.col < cols - 1)
    return np.outer(wy, wx).astype(np.float32)


class StripAccumulator:
    """Weighted sums of tile probabilities over the rows that are still open.

    `add` tiles in TileGrid order (from tile row `first_row` on); after the last tile of each tile
    row, `flush` hands back the rows that are final as (row_offset, probabilities (K,h,W), valid (h,W)).
    """

    def __init__(self, grid: TileGrid, n_channels: int, crop: int, first_row: int = 0) -> None:
        self.grid, self.crop = grid, crop
        self.starts = grid.row_starts
        depth = min(grid.height, 2 * grid.size)  # open rows of one tile row + the next one
        self.top = self.starts[first_row]  # a part of the scene starts at its first tile row
        self.num = np.zeros((n_channels, depth, grid.width), np.float32)
        self.den = np.zeros((depth, grid.width), np.float32)
        self.valid = np.zeros((depth, grid.width), bool)
        self._used = 0   # buffer rows tiles have reached; those below are still zero
        self._weights: dict[tuple[bool, bool, bool, bool, int, int], np.ndarray] = {}

    def _tile_weights(self, tile: Tile) -> np.ndarray:
        rows, cols = self.grid.shape
        key = (tile.row > 0, tile.row < rows - 1, tile.col > 0, tile.col < cols - 1,
               int(tile.window.height), int(tile.window.width))
        if key not in self._weights:
            self._weights[key] = blend_weights(tile, self.grid, self.crop)
        return self._weights[key]

    def add(self, tile: Tile, probs: np.ndarray, valid: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """Accumulate one tile; returns the strips that became final (usually none)."""
        w = self._tile_weights(tile)
        r0 = int(tile.window.row_off) - self.top
        rs, cs = slice(r0, r0 + int(tile.window.height)), tile.slices[1]
        self.num[:, rs, cs] += probs * w
        self.den[rs, cs] += w
        self.valid[rs, cs] = valid
        self._used = max(self._used, rs.stop)
        if tile.col == self.grid.shape[1] - 1:
            last = tile.row == self.grid.shape[0] - 1
            end = self.grid.height if last else self.starts[tile.row + 1]
            return [self._flush(end)]
        return []

    def _flush(self, end: int) -> tuple[int, np.ndarray, np.ndarray]:
        n = end - self.top
        probs = self.num[:, :n] / np.maximum(self.den[:n], 1e-12)
        out = (self.top, probs, self.valid[:n].copy())
        # Shift the still-open rows (the overlap into the next tile row) to the front of the
        # buffers; the zero rows below them need no copy.
        carried = max(0, self._used - n)
        for buf in (self.num, self.den, self.valid):
            buf[..., :carried, :] = buf[..., n:self._used, :]   # numpy buffers an overlapping copy
            buf[..., carried:self._used, :] = 0
        self._used = carried
        self.top = end
        return out
