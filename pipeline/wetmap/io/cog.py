"""Streamed rasters: strips written to a tiled GeoTIFF as they complete, then one COG conversion."""

from __future__ import annotations

import math
from collections.abc import Mapping
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
