"""Blending overlapping tile predictions and writing them out as Cloud-Optimized GeoTIFFs.

Each tile's probabilities are weighted by a window that is 1 in the tile's centre and falls off
with a raised cosine towards every side that another tile overlaps (after a small border crop,
where a network's padding makes it least reliable). Sides on the raster edge keep weight 1, so the
last row and column are covered. Rows are finalised and written as soon as no later tile can
touch them: memory holds one strip of tiles, however tall the raster.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from wetmap.io.raster import Grid, tiled_profile
from wetmap.tiling import Tile, TileGrid

NODATA = 255


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
        if tile.col == self.grid.shape[1] - 1:
            last = tile.row == self.grid.shape[0] - 1
            end = self.grid.height if last else self.starts[tile.row + 1]
            return [self._flush(end)]
        return []

    def _flush(self, end: int) -> tuple[int, np.ndarray, np.ndarray]:
        n = end - self.top
        probs = self.num[:, :n] / np.maximum(self.den[:n], 1e-12)
        out = (self.top, probs, self.valid[:n].copy())
        # Shift the still-open rows to the front of the buffers.
        keep = self.den.shape[0] - n
        for buf in (self.num, self.den, self.valid):
            buf[..., :keep, :] = buf[..., n:, :].copy()
            buf[..., keep:, :] = 0
        self.top = end
        return out


def open_strip_writer(path: Path, grid: Grid, dtype: str, description: str,
                      colormap: Mapping[int, tuple[int, ...]] | None, tags: dict[str, str]) -> rasterio.io.DatasetWriter:
    """A tiled, uncompressed GeoTIFF to receive strips; the COG conversion compresses it once
    (compressing here as well took longer than reading, blending and writing together)."""
    profile = {k: v for k, v in tiled_profile(grid, 1, dtype, NODATA, blocksize=512).items()
               if k not in ("compress", "predictor")}
    dst = rasterio.open(path, "w", **profile)
    dst.set_band_description(1, description)
    if colormap:
        dst.write_colormap(1, colormap)
    dst.update_tags(**tags)
    return dst


def write_strip(dst: rasterio.io.DatasetWriter, row: int, data: np.ndarray) -> None:
    dst.write(data, 1, window=Window(0, row, data.shape[1], data.shape[0]))


def to_cog(src_path: Path, dst_path: Path, resampling: str) -> None:
    """Rewrite a GeoTIFF as a Cloud-Optimized GeoTIFF with overviews (GDAL's COG driver).

    Overviews go down to about one block, and there is always at least one level, so QGIS
    has a pyramid to draw from even for a small scene.
    """
    with rasterio.open(src_path) as src:
        size = max(src.width, src.height)
    block = 512 if size > 4096 else 256
    levels = max(1, math.ceil(math.log2(max(size / block, 1.0))))
    rasterio.shutil.copy(src_path, dst_path, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                         BLOCKSIZE=block, OVERVIEW_RESAMPLING=resampling, OVERVIEW_COUNT=levels,
                         BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")


def confidence(probs: np.ndarray) -> np.ndarray:
    """How far each pixel's prediction is from a uniform guess: 0 (uniform) .. 1 (certain).

    probs: (K,h,w) class probabilities, or (1,h,w) P(positive) of a binary model.
    """
    if probs.shape[0] == 1:
        return np.abs(2 * probs[0] - 1)
    k = probs.shape[0]
    return (probs.max(0) - 1.0 / k) * (k / (k - 1))


def combine_scenes(probs: list[np.ndarray], valids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One tile's probabilities from several scenes: where one scene is clear it decides; where
    several are, they are blended by confidence.

    probs: per scene (channels,h,w); valids: per scene (h,w). Pixels clear in no scene stay invalid.
    """
    if len(probs) == 1:
        return probs[0], valids[0]
    num = np.zeros_like(probs[0])
    den = np.zeros(probs[0].shape[1:], np.float32)
    for p, ok in zip(probs, valids):
        w = np.where(ok, confidence(p) + 1e-3, 0.0).astype(np.float32)
        num += p * w
        den += w
    valid = np.logical_or.reduce(valids)
    return num / np.maximum(den, 1e-12), valid


def class_labels(probs: np.ndarray, valid: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """uint8 classes (argmax; binary (1,h,w): 1 where P > threshold), 255 where not valid."""
    labels = (probs[0] > threshold).astype(np.uint8) if probs.shape[0] == 1 else probs.argmax(0).astype(np.uint8)
    labels[~valid] = NODATA
    return labels


def class_probability(probs: np.ndarray, c: int) -> np.ndarray:
    """P(class c) from (K,h,w) probabilities, or from a binary model's (1,h,w) P(class 1)."""
    return probs[0] if probs.shape[0] == 1 else probs[c]


def percent(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 wetland probability in percent (0-100), 255 where not valid."""
    out = np.rint(probs * 100).astype(np.uint8)
    out[~valid] = NODATA
    return out
