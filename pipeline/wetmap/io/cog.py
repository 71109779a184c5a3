"""Streamed rasters: strips written to a tiled GeoTIFF as they complete, then one COG conversion.

Overviews, most of that conversion's time (benchmarks/bench_cog.py), can be built from the strips
as they pass (`StreamedOverviews`); the COG driver then only compresses them, and the file is the
same, byte for byte, as when GDAL builds them itself.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from wetmap.io.raster import Grid, tiled_profile

NODATA = 255


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


def overview_plan(width: int, height: int) -> tuple[int, int]:
    """The COG's block size and number of overview levels: down to about one block, and always at
    least one level, so QGIS has a pyramid to draw from even for a small scene."""
    size = max(width, height)
    block = 512 if size > 4096 else 256
    return block, max(1, math.ceil(math.log2(max(size / block, 1.0))))


def _nearest(rows: np.ndarray) -> np.ndarray:
    return rows[::2, ::2]


def _average(rows: np.ndarray) -> np.ndarray:
    """The mean of the clear pixels of each 2 x 2, rounded half up; no data where none is clear."""
    quads = [rows[i::2, j::2] for i in (0, 1) for j in (0, 1)]
    clear = [q != NODATA for q in quads]
    total = sum(np.where(c, q, 0).astype(np.uint16) for q, c in zip(quads, clear))
    count = sum(c.astype(np.uint16) for c in clear)
    mean = (total + count // 2) // np.maximum(count, 1)
    return np.where(count > 0, mean, NODATA).astype(np.uint8)


class StreamedOverviews:
    """The overview levels of a uint8 strip file, computed from its strips as they are written.

    GDAL's way, checked byte for byte against its own (tests/io/test_cog.py): each level from the
    one above, NEAREST taking the top-left pixel of each 2 x 2, AVERAGE the rounded mean of its
    clear pixels. Only where every level halves exactly (both sides divisible by 2**levels) and
    no colour table is averaged (GDAL averages a paletted band's colours): elsewhere `start`
    returns None, leaving the overviews to GDAL.
    """

    _REDUCE: dict[str, Callable[[np.ndarray], np.ndarray]] = {"NEAREST": _nearest, "AVERAGE": _average}

    @classmethod
    def start(cls, grid: Grid, resampling: str, scratch: Callable[[str], Path],
              paletted: bool = False) -> StreamedOverviews | None:
        """Writers for each level (`scratch(suffix)` names their files), or None where GDAL must build them."""
        _, levels = overview_plan(grid.width, grid.height)
        step = 2 ** levels
        how = resampling.upper()
        if how not in cls._REDUCE or (paletted and how != "NEAREST") or grid.width % step or grid.height % step:
            return None
        return cls(grid, levels, how, scratch)

    def __init__(self, grid: Grid, levels: int, resampling: str, scratch: Callable[[str], Path]) -> None:
        self._reduce = self._REDUCE[resampling]
        self.paths = [scratch(f".ovr{k}.tif") for k in range(1, levels + 1)]
        self.vrt = scratch(".ovr.vrt")
        self._rows = [0] * levels
        self._next = 0
        self._carry: list[np.ndarray | None] = [None] * levels
        self._dst = []
        for k, path in enumerate(self.paths, start=1):
            level = Grid(grid.crs, grid.transform * grid.transform.scale(2 ** k), grid.width >> k, grid.height >> k)
            profile = {key: v for key, v in tiled_profile(level, 1, "uint8", NODATA, blocksize=512).items()
                       if key not in ("compress", "predictor")}
            self._dst.append(rasterio.open(path, "w", **profile))

    def add(self, row: int, strip: np.ndarray) -> None:
        """Rows `row`... of the full-resolution map; they must come in order, each level being
        made from the rows before it."""
        if row != self._next:
            raise RuntimeError(f"streamed overviews got row {row}, expected {self._next}: strips out of order")
        self._next += strip.shape[0]
        for k, dst in enumerate(self._dst):
            carry = self._carry[k]
            rows = strip if carry is None else np.concatenate([carry, strip])
            even = rows.shape[0] - rows.shape[0] % 2
            self._carry[k] = rows[even:].copy() if even < rows.shape[0] else None   # the caller may reuse its buffer
            if even == 0:
                return
            strip = self._reduce(rows[:even])
            write_strip(dst, self._rows[k], strip)
            self._rows[k] += strip.shape[0]

    def close(self) -> None:
        """Idempotent; the levels must be closed before `source` is copied."""
        for dst in self._dst:
            dst.close()

    def source(self, strips: Path) -> Path:
        """A VRT of `strips` whose overviews are the levels written here, for the COG driver to copy."""
        unfinished = [path.name for path, dst, rows in zip(self.paths, self._dst, self._rows) if rows != dst.height]
        if unfinished:
            raise RuntimeError(f"streamed overviews incomplete ({', '.join(unfinished)}): not every strip was added")
        rasterio.shutil.copy(strips, self.vrt, driver="VRT")
        tree = ET.parse(self.vrt)
        band = tree.getroot().find("VRTRasterBand")
        if band is None:
            raise RuntimeError(f"{self.vrt}: GDAL wrote a VRT without a band")
        for path in self.paths:
            overview = ET.SubElement(band, "Overview")
            ET.SubElement(overview, "SourceFilename", relativeToVRT="1").text = path.name
            ET.SubElement(overview, "SourceBand").text = "1"
        tree.write(self.vrt)
        return self.vrt


def to_cog(src_path: Path, dst_path: Path, resampling: str, overviews: StreamedOverviews | None = None) -> None:
    """Rewrite a GeoTIFF as a Cloud-Optimized GeoTIFF with overviews (GDAL's COG driver), with
    the `overviews` streamed while it was written where given, else built here."""
    with rasterio.open(src_path) as src:
        block, levels = overview_plan(src.width, src.height)
    source, extra = src_path, {}
    if overviews is not None:
        source, extra = overviews.source(src_path), {"OVERVIEWS": "FORCE_USE_EXISTING"}
    rasterio.shutil.copy(source, dst_path, driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
                         BLOCKSIZE=block, OVERVIEW_RESAMPLING=resampling, OVERVIEW_COUNT=levels,
                         BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS", **extra)
