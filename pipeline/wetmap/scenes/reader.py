"""A scene's bands on a grid, read window by window as reflectance x 10000.

Each band file is opened once and seen on the grid through `io.raster.aligned`: a file already on
the grid is read as it is; a coarser one (Sentinel-2's 20 m bands on the 10 m grid) or one in
another CRS through a warped view, bilinear, its no data left out of the interpolation. Nothing is
read until a window is asked for, so memory does not grow with the scene.

When the scene is one file whose values need no rescaling (a stacked GeoTIFF of integer
reflectance x 10000, the sample scenes), windows are decoded as they are, in the file's own type:
the chip store keeps them as they are and prediction reads them exactly as it always has. Else
every band is rescaled in float32 (raw * scale + offset), and pixels that are no data in any band
read as 0 with a False valid mask, so neither NaN nor a stray fill value reaches a model.

Prediction on a GPU reads the raw values instead (`read_raw`: uint16 for Sentinel-2 and Landsat,
half the bytes of float32) and rescales them there (`Rescale`), with the same float32 operations
in the same order, so the GPU is sent half the bytes and does the arithmetic itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from wetmap.io.paths import gdal_path
from wetmap.io.raster import Grid, StripReader, aligned, nodata_valid, open_raster, read_window
from wetmap.scenes.spec import BandSource, MaskSource, SceneSpec


def scene_grid(bands: Sequence[BandSource]) -> Grid:
    """The grid of the finest band among `bands` (the first of equals): the scene's own grid."""
    best: Grid | None = None
    for path in dict.fromkeys(b.path for b in bands):
        with open_raster(path) as src:
            grid = Grid.of(src)
        if best is None or grid.res < best.res * (1 - 1e-9):
            best = grid
    assert best is not None
    return best


def resolve_mask(spec: SceneSpec, clouds: str | None) -> MaskSource | None:
    """The cloud mask to use.

    "auto" (or None): the product's own (SCL, QA_PIXEL), else the detector's; "detect": the
    detector's even where the product has one; "none": no mask; anything else: a mask file.
    The detector's mask comes back pending: `wetmap.masks.detection.ready_mask` runs it once the other
    inputs have been checked, so a wrong input is refused before minutes of detection.
    """
    from wetmap.scenes.spec import guess_kind

    if clouds is None or clouds in ("auto", "detect"):
        if spec.mask is not None and clouds != "detect":
            return spec.mask
        return MaskSource("", "classes", "detect")
    if clouds == "none":
        return None
    path = gdal_path(clouds)
    with open_raster(path) as src:
        description = src.descriptions[0]
    return MaskSource(path, guess_kind(path, description), "file")


class _File:
    """One band file seen on the grid, and where its bands go in the scene's band order."""

    def __init__(self, path: str, bands: list[tuple[int, BandSource]], grid: Grid, strips: bool) -> None:
        self.src = open_raster(path)
        try:
            first = bands[0][1]
            declared = first.nodata if first.nodata is not None else self.src.nodata
            self.view = aligned(self.src, grid, nodata=declared if declared is not None else 0,
                                resampling=Resampling.bilinear, name=path, src_nodata=declared)
        except BaseException:
            self.src.close()
            raise
        self.positions = [pos for pos, _ in bands]
        self.sources = [band for _, band in bands]
        self.indexes = [band.index for band in self.sources]
        # A warped view reads its no data (and pixels outside the file) as view.nodata.
        self.nodata = self.view.nodata if self.view is not self.src else declared
        self.strips = StripReader(self.view, self.indexes) if strips else None

    def read(self, window: Window) -> np.ndarray:
        if self.strips is not None:
            return self.strips.read(window)
        return read_window(self.view, window, self.indexes)

    def close(self) -> None:
        if self.view is not self.src:
            self.view.close()
        self.src.close()


class SceneReader:
    """`bands` (a SceneSpec's selection) on `grid`, window by window.

    `strips`: serve windows from full-width strips (prediction's overlapping tiles, in row order);
    without, each window is read on its own (chips).
    """

    def __init__(self, bands: Sequence[BandSource], grid: Grid, *, strips: bool = False) -> None:
        self.bands, self.grid = tuple(bands), grid
        groups: dict[str, list[tuple[int, BandSource]]] = {}
        for pos, band in enumerate(self.bands):
            groups.setdefault(band.path, []).append((pos, band))
        self.files: list[_File] = []
        try:
            for path, members in groups.items():
                self.files.append(_File(path, members, grid, strips))
        except BaseException:
            self.close()
            raise
        dtypes = {f.src.dtypes[i - 1] for f in self.files for i in f.indexes}
        one = len(self.files) == 1 and self.files[0].positions == list(range(len(self.bands)))
        self.native = (one and all(b.identity for b in self.bands) and len(dtypes) == 1
                       and np.dtype(next(iter(dtypes))).kind in "iu")
        # What `read_into` writes: the file's own type when read as it is, else float32.
        self.dtype = np.dtype(next(iter(dtypes))) if self.native else np.dtype(np.float32)
        # The value marking no data in what `read_into` writes (None: it returns the mask instead).
        self.nodata = self.files[0].nodata if self.native else None
        # What `read_raw` gives: the bands' common integer type, else float32; and their rescaling.
        common = np.result_type(*dtypes)
        self.raw_dtype = common if common.kind in "iu" else np.dtype(np.float32)
        self.rescale = Rescale.of(self.bands)

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(bands (C,h,w) float32, valid (h,w)): valid where no band is no data."""
        if self.native:
            raw = self.files[0].read(window).astype(np.float32)
            return raw, nodata_valid(raw, self.nodata)
        out = np.empty((len(self.bands), int(window.height), int(window.width)), np.float32)
        return out, self._harmonise(window, out)

    def read_raw(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """(bands (C,h,w) of `raw_dtype` as the files hold them, valid (h,w)), to be rescaled by
        `rescale` where the model runs. Float bands' no data (NaN included) read as 0, so that no
        NaN survives the clear mask's multiplication; integer ones keep their fill value."""
        if self.native:
            raw = self.files[0].read(window)
            return raw, nodata_valid(raw, self.nodata)
        out = np.empty((len(self.bands), int(window.height), int(window.width)), self.raw_dtype)
        bad = self._gather(window, out, rescale=False)
        if bad.any() and out.dtype.kind == "f":
            out[:, bad] = 0
        return out, ~bad

    def read_into(self, window: Window, out: np.ndarray) -> np.ndarray | None:
        """Decode `window` into `out` (C,h,w) of `self.dtype` (a view into a batch is fine).

        Returns None when read as it is (then `self.nodata` marks no data), else the valid mask.
        """
        if self.native:
            read_window(self.files[0].view, window, self.files[0].indexes, out=out)
            return None
        return self._harmonise(window, out)

    def _harmonise(self, window: Window, out: np.ndarray) -> np.ndarray:
        bad = self._gather(window, out, rescale=True)
        if bad.any():
            out[:, bad] = 0
        return ~bad

    def _gather(self, window: Window, out: np.ndarray, rescale: bool) -> np.ndarray:
        """Every file's bands into their places in `out` (rescaled if asked); the no-data mask."""
        bad = np.zeros(out.shape[1:], bool)
        for file in self.files:
            raw = file.read(window)
            for k, (pos, band) in enumerate(zip(file.positions, file.sources)):
                values = raw[k]
                if values.dtype.kind == "f":
                    bad |= np.isnan(values)
                if file.nodata is not None and _holds(values.dtype, file.nodata):
                    bad |= values == file.nodata
                target = out[pos]
                target[...] = values
                if rescale and not band.identity:
                    target *= np.float32(band.scale)
                    target += np.float32(band.offset)
        return bad

    def close(self) -> None:
        for file in self.files:
            file.close()
        self.files = []

    def __enter__(self) -> SceneReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _holds(dtype: np.dtype, value: float) -> bool:
    if np.isnan(value):
        return False
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


@dataclass(frozen=True, eq=False)   # compared and hashed by identity: one per opened scene
class Rescale:
    """Raw band values to reflectance x 10000: `raw * scale + offset` per band in float32, the
    operations `SceneReader.read` does, for whoever applies them to `read_raw`'s values
    (`predict.runner.TilePredictor`, on its device), so that both agree bit for bit."""

    scale: np.ndarray    # (C,) float32
    offset: np.ndarray   # (C,) float32

    @classmethod
    def of(cls, bands: Sequence[BandSource]) -> Rescale | None:
        """None where every band is read as it is."""
        if all(b.identity for b in bands):
            return None
        return cls(np.array([b.scale for b in bands], np.float32), np.array([b.offset for b in bands], np.float32))
