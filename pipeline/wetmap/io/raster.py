"""Raster I/O: checked opening, band selection, grid alignment, lazy Dask reads, tiled writes.

Everything that opens a raster goes through `open_raster`, so a missing file, a corrupt GeoTIFF
or a raster without a CRS is one clear error wherever it is first touched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.transform import array_bounds
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from wetmap.errors import WetmapError, first_line
from wetmap.io.paths import check_local, gdal_path, is_remote
from wetmap.runtime import gdal_env

if TYPE_CHECKING:
    import xarray as xr

@dataclass(frozen=True)
class Grid:
    """A raster grid: the pixels that every layer (image, labels, clouds, output) is put onto."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, src: DatasetReader | WarpedVRT) -> Grid:
        return cls(src.crs, src.transform, src.width, src.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in the grid's CRS."""
        return array_bounds(self.height, self.width, self.transform)

    @property
    def res(self) -> float:
        return abs(self.transform.a)

    def window_transform(self, window: Window) -> Affine:
        return rasterio.windows.transform(window, self.transform)


def open_raster(path: str | Path, *, need_crs: bool = True) -> DatasetReader:
    """Open a raster for reading, turning every GDAL failure into a one-line WetmapError.

    Local paths, archives (/vsizip/) and remote paths (/vsicurl/, /vsis3/, s3://, https://...)
    alike: remote ones go to GDAL unchanged (see io/paths.py).
    """
    text = gdal_path(path)
    check_local(text)
    try:
        if is_remote(text):   # no listing of the remote folder: one request fewer per file
            with gdal_env(None, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR"):
                src = rasterio.open(text)
        else:
            src = rasterio.open(text)
    except RasterioError as exc:
        what = "cannot open remote file" if is_remote(text) else "not a readable raster"
        raise WetmapError(f"{what} ({first_line(exc)})", text) from None
    if need_crs and src.crs is None:
        src.close()
        raise WetmapError("raster has no CRS; georeference it (e.g. gdal_edit.py -a_srs)", text)
    return src


def band_indexes(src: DatasetReader, bands: Sequence[str | int] | None) -> list[int]:
    """1-based band indexes for band names (descriptions) or indexes; None means all bands."""
    if bands is None:
        return list(range(1, src.count + 1))
    names = [d or "" for d in src.descriptions]
    out, missing = [], []
    for band in bands:
        if isinstance(band, int) or (isinstance(band, str) and band.isdigit()):
            index = int(band)
            if not 1 <= index <= src.count:
                missing.append(str(band))
            out.append(index)
        elif band in names:
            out.append(names.index(band) + 1)
        else:
            missing.append(str(band))
    if missing:
        have = ",".join(n or str(i + 1) for i, n in enumerate(names))
        raise WetmapError(f"band(s) {','.join(missing)} not found (bands present: {have})", src.name)
    return out


def read_window(src: DatasetReader | WarpedVRT, window: Window, indexes: list[int] | int | None = None,
                boundless_fill: float | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Read one window; with `boundless_fill`, parts past the raster edge read as that value.

    Padding is done here rather than by GDAL's boundless mode, which warped views do not allow.
    `out` (without `boundless_fill`): decode straight into this array, e.g. a view into a batch.
    """
    try:
        if boundless_fill is None:
            return src.read(indexes, window=window, out=out)
        if out is not None:
            raise ValueError("read_window: out is not supported with boundless_fill")
        return read_padded(lambda inner: src.read(indexes, window=inner), window, src.width, src.height,
                           boundless_fill)
    except RasterioError as exc:
        raise WetmapError(f"cannot read pixels ({first_line(exc)})", src.name) from None


def read_padded(read, window: Window, width: int, height: int, fill: float) -> np.ndarray:
    """`read(inner)` of the part of `window` inside a width x height raster, padded with `fill`."""
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    top, left = max(0, -r0), max(0, -c0)
    bottom, right = max(0, r0 + h - height), max(0, c0 + w - width)
    data = read(Window(c0 + left, r0 + top, w - left - right, h - top - bottom))
    if not (top or bottom or left or right):
        return data
    pad = [(0, 0)] * (data.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(data, pad, constant_values=fill)


def aligned(src: DatasetReader, grid: Grid, *, nodata: float, resampling: Resampling = Resampling.nearest,
            name: str | Path | None = None, other: str | Path | None = None,
            src_nodata: float | None = None) -> DatasetReader | WarpedVRT:
    """`src` seen on `grid`: reprojected / cropped / padded lazily (window reads stay cheap).

    Pixels of `grid` that `src` does not cover read as `nodata` (e.g. 255 = unknown for labels).
    `src_nodata` (default: the file's own) is left out of the resampling, so no-data pixels never
    blend into their neighbours (Sentinel-2's JPEG 2000 files declare none; their no data is 0).
    A source that does not overlap the grid at all is an error naming both files and bounds.
    """
    if src.crs is None:
        raise WetmapError("raster has no CRS", name or src.name)
    src_bounds = rasterio.warp.transform_bounds(src.crs, grid.crs, *src.bounds)
    gw, gs, ge, gn = grid.bounds
    if src_bounds[0] >= ge or src_bounds[2] <= gw or src_bounds[1] >= gn or src_bounds[3] <= gs:
        raise WetmapError(
            f"does not overlap {other or 'the image'}: bounds {_fmt(src_bounds)} vs "
            f"{_fmt(grid.bounds)} ({grid.crs.to_string()})",
            name or src.name,
        )
    if src.crs == grid.crs and src.transform == grid.transform and (src.width, src.height) == (grid.width, grid.height):
        return src
    return WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                     resampling=resampling, nodata=nodata,
                     src_nodata=src.nodata if src_nodata is None else src_nodata)


class StripReader:
    """Windows of one raster read in top-to-bottom order, served from whole strips of block rows.

    Overlapping tiles cross file blocks several times; GDAL's block cache did not keep them for us
    (every tile re-decoded its blocks; bench_predict.py prints the cost). Reading full-width
    strips of whole block rows decodes each block exactly once, lets GDAL decode a strip's blocks
    on several threads, and holds only the strips the current window touches.

    A warped view's strips span whole block rows of the file it warps (a 20 m JPEG 2000's 640 px
    tiles are 1280 rows of the 10 m grid): GDAL decodes a JPEG 2000 tile for every read that
    touches it, and 256-row strips decoded each 20 m tile five times.
    """

    def __init__(self, src: DatasetReader | WarpedVRT, indexes: list[int]) -> None:
        self.src, self.indexes = src, indexes
        if isinstance(src, DatasetReader):
            self.height = src.block_shapes[0][0]
        else:   # source block rows in grid rows, at least 256
            scale = abs(src.src_dataset.transform.e) / abs(src.transform.e)
            self.height = max(256, math.ceil(src.src_dataset.block_shapes[0][0] * scale))
        self.strips: dict[int, np.ndarray] = {}   # strip number -> (bands, rows, width)

    def read(self, window: Window) -> np.ndarray:
        r0, r1 = int(window.row_off), int(window.row_off + window.height)
        c0, c1 = int(window.col_off), int(window.col_off + window.width)
        first, last = r0 // self.height, (r1 - 1) // self.height
        if self.strips and first < min(self.strips):   # moved up (not row-major): read directly
            return read_window(self.src, window, self.indexes)
        for n in [n for n in self.strips if n < first]:
            del self.strips[n]
        parts = []
        for n in range(first, last + 1):
            if n not in self.strips:
                top = n * self.height
                rows = Window(0, top, self.src.width, min(self.height, self.src.height - top))
                self.strips[n] = read_window(self.src, rows, self.indexes)
            lo, hi = max(r0 - n * self.height, 0), min(r1 - n * self.height, self.height)
            parts.append(self.strips[n][:, lo:hi, c0:c1])
        return parts[0].copy() if len(parts) == 1 else np.concatenate(parts, axis=1)


def parse_crs(text: str, name: str = "--crs") -> CRS:
    try:
        return CRS.from_user_input(text)
    except (rasterio.errors.CRSError, ValueError):
        raise WetmapError(f"not a CRS: '{text}' (try EPSG:32632)", name) from None


def mosaic_grid(grids: Sequence[Grid], crs: CRS | None = None, resolution: float | None = None,
                clip: tuple[CRS, tuple[float, float, float, float]] | None = None) -> Grid:
    """The grid a mosaic of scenes on `grids` is written on: the first scene's CRS, pixel size and
    pixel alignment (or `crs` / `resolution`, then aligned to whole multiples of the pixel size),
    extended to cover every scene, or only `clip` = (crs, bounds) of it (a region's box).
    One scene with no options gives exactly its own grid."""
    first = grids[0]
    dst_crs = crs or first.crs
    if resolution is None and dst_crs == first.crs:
        res = first.res
    elif resolution is None:
        default, _, _ = rasterio.warp.calculate_default_transform(first.crs, dst_crs, first.width,
                                                                 first.height, *first.bounds)
        res = abs(default.a)
    else:
        res = float(resolution)
    same = dst_crs == first.crs and res == first.res
    ox, oy = (first.transform.c, first.transform.f) if same else (0.0, 0.0)
    west, south, east, north = math.inf, math.inf, -math.inf, -math.inf
    for grid in grids:
        w, s, e, n = rasterio.warp.transform_bounds(grid.crs, dst_crs, *grid.bounds, densify_pts=21)
        west, south, east, north = min(west, w), min(south, s), max(east, e), max(north, n)
    if clip is not None:
        w, s, e, n = rasterio.warp.transform_bounds(clip[0], dst_crs, *clip[1], densify_pts=21)
        west, south, east, north = max(west, w), max(south, s), min(east, e), min(north, n)
        if west >= east or south >= north:
            raise WetmapError("the region does not overlap any scene")
    eps = 1e-6 * res
    x0 = ox + math.floor((west - ox) / res + eps) * res
    x1 = ox + math.ceil((east - ox) / res - eps) * res
    y1 = oy - math.floor((oy - north) / res + eps) * res
    y0 = oy - math.ceil((oy - south) / res - eps) * res
    return Grid(dst_crs, Affine(res, 0.0, x0, 0.0, -res, y1), round((x1 - x0) / res), round((y1 - y0) / res))


def _fmt(bounds: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in bounds) + ")"


def write_raster(path: Path, data: np.ndarray, grid: Grid, *, nodata: float | None,
                 descriptions: Sequence[str] | None = None, colormap: Mapping[int, tuple[int, ...]] | None = None,
                 tags: dict[str, str] | None = None, blocksize: int = 256) -> None:
    """Write a small (C,H,W) array as a tiled, DEFLATE-compressed GeoTIFF."""
    data = data[None] if data.ndim == 2 else data
    profile = tiled_profile(grid, data.shape[0], data.dtype, nodata, blocksize)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or [], start=1):
            dst.set_band_description(i, text)
        if colormap:
            dst.write_colormap(1, colormap)
        if tags:
            dst.update_tags(**tags)


def tiled_profile(grid: Grid, count: int, dtype: np.dtype | str, nodata: float | None,
                  blocksize: int = 256) -> dict:
    """A GeoTIFF profile: internal tiles, DEFLATE with a predictor, BIGTIFF when needed."""
    dtype = np.dtype(dtype)
    return {
        "driver": "GTiff", "crs": grid.crs, "transform": grid.transform, "width": grid.width,
        "height": grid.height, "count": count, "dtype": dtype.name, "nodata": nodata,
        "tiled": True, "blockxsize": blocksize, "blockysize": blocksize, "compress": "deflate",
        "predictor": 3 if dtype.kind == "f" else 2, "BIGTIFF": "IF_SAFER", "interleave": "pixel",
    }


def open_lazy(path: str | Path, bands: Sequence[str | int] | None = None, *, name: str | None = None):
    """A raster as a Dask-backed xarray.DataArray (band, y, x), chunked on the file's own blocks.

    Nothing is read until computed; bands are chosen by description or 1-based index and the
    `band` coordinate carries their names.
    """
    import rioxarray

    with open_raster(path) as src:
        indexes = band_indexes(src, bands)
        block_h, block_w = src.block_shapes[0]
        names = [src.descriptions[i - 1] or str(i) for i in indexes]
    da = _data_array(rioxarray.open_rasterio(path, chunks={"band": 1, "y": block_h, "x": block_w}, lock=False,
                                             masked=False), path)
    da = da.isel(band=[i - 1 for i in indexes]).assign_coords(band=names)
    return da.rename(name) if name else da


def _data_array(opened: object, path: str | Path) -> xr.DataArray:
    """rioxarray's result for a plain raster; a file of subdatasets (HDF, NetCDF) opens as a Dataset."""
    import xarray as xr

    if not isinstance(opened, xr.DataArray):
        raise WetmapError("holds several subdatasets, not one raster: name one of them (GDAL's SUBDATASET path)", path)
    return opened


def stack_bands(paths: dict[str, str | Path], reference: str, *,
                resampling: Resampling = Resampling.bilinear):
    """Single-band files at different resolutions (e.g. Sentinel-2 10 m and 20 m bands), lazily
    resampled onto the grid of the `reference` band and stacked as one (band, y, x) DataArray.

    Each coarser band is seen through a WarpedVRT on the reference grid, so it stays lazy: only
    the blocks a computation touches are read and resampled.
    """
    import rioxarray
    import xarray as xr

    if reference not in paths:
        raise WetmapError(f"reference band {reference} is not among {', '.join(paths)}")
    with open_raster(paths[reference]) as ref:
        grid = Grid.of(ref)
        block_h, block_w = ref.block_shapes[0]
    chunks = {"band": 1, "y": block_h, "x": block_w}
    layers = []
    for band, path in paths.items():
        src = open_raster(path)
        view = aligned(src, grid, nodata=src.nodata if src.nodata is not None else 0,
                       resampling=resampling, name=path, other=paths[reference])
        da = _data_array(rioxarray.open_rasterio(view, chunks=chunks, lock=False), path)
        layers.append(da.isel(band=[0]).assign_coords(band=[band]))
    return xr.concat(layers, dim="band")


def nodata_valid(bands: np.ndarray, nodata: float | None) -> np.ndarray:
    """(C,H,W) bands to (H,W) valid mask: no band is nodata or NaN."""
    bad = np.zeros(bands.shape[1:], bool)
    if bands.dtype.kind == "f":
        bad |= np.isnan(bands).any(0)
    if nodata is not None and not np.isnan(nodata):
        bad |= (bands == nodata).any(0)
    return ~bad
