"""Valid-pixel masks: True where a pixel may be used for training, prediction and scoring.

A pixel is invalid when it is no data in any band (the band nodata value, or NaN), or cloud,
cloud shadow or cirrus by the scene's mask: a Sentinel-2 SCL band, a Landsat QA_PIXEL band (bit
flags), a generic 0/1 mask raster (1 = cloud) or a "cloud classes" raster (`CLASS_NAMES`: what the
detector and `wetmap clouds` write). Clouds can be grown by N pixels, read with a halo so a
window's mask is the same however the scene is cut into windows.

`CloudMask.classes` says why a pixel is masked, in the same classes for every kind of mask, so an
analyst can look at the mask wetmap will use before trusting it; `valid` is `classes == CLEAR`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rasterio.windows import Window
from scipy import ndimage

from wetmap.config import DEFAULT_SCL_INVALID, CloudConfig
from wetmap.io.raster import Grid, StripReader, aligned, open_raster, read_padded, read_window
from wetmap.scenes.spec import MaskKind, guess_kind

# Landsat Collection 2 QA_PIXEL bits: fill, dilated cloud, cirrus, cloud, cloud shadow.
QA_PIXEL_INVALID_BITS = (0, 1, 2, 3, 4)

QA_PIXEL_FILL, QA_PIXEL_SHADOW = 0, 4

# Cloud classes: why a pixel is not used. "grown" is clear but within `cloud.dilate` of a mask.
CLEAR, CLOUD, SHADOW, GROWN, NO_DATA = 0, 1, 2, 3, 255

CLASS_NAMES = {CLEAR: "clear", CLOUD: "cloud", SHADOW: "shadow", GROWN: "grown", NO_DATA: "no data"}

CLASS_COLORS = {CLEAR: (0, 0, 0, 0), CLOUD: (240, 240, 255, 255), SHADOW: (110, 60, 160, 255),
                GROWN: (250, 200, 60, 255), NO_DATA: (0, 0, 0, 0)}


# SCL values with a class of their own among the masked ones (the rest read as cloud).
SCL_SHADOW, SCL_NO_DATA = (3,), (0, 1)


def scl_valid(scl: np.ndarray, invalid: Sequence[int] = DEFAULT_SCL_INVALID) -> np.ndarray:
    """Sentinel-2 L2A scene classification to valid mask (a lookup table for byte rasters,
    several times faster than np.isin)."""
    if scl.dtype == np.uint8:
        table = np.ones(256, bool)
        table[[c for c in invalid if 0 <= c < 256]] = False
        return np.take(table, scl)
    return ~np.isin(scl, np.asarray(invalid, dtype=scl.dtype))


def qa_pixel_valid(qa: np.ndarray, bits: Sequence[int] = QA_PIXEL_INVALID_BITS) -> np.ndarray:
    """Landsat Collection 2 QA_PIXEL bit flags to valid mask."""
    flags = np.uint64(sum(1 << b for b in bits))
    return (qa.astype(np.uint64) & flags) == 0


def mask_valid(mask: np.ndarray) -> np.ndarray:
    """A generic cloud mask raster, 1 (or any non-zero) = cloud."""
    return mask == 0


def raw_classes(raw: np.ndarray, kind: MaskKind, scl_invalid: Sequence[int] = DEFAULT_SCL_INVALID) -> np.ndarray:
    """Any mask's raw values to cloud classes (before growing)."""
    if kind == "classes":
        return raw.astype(np.uint8)
    out = np.full(raw.shape, CLEAR, np.uint8)
    if kind == "scl":
        out[~scl_valid(raw, scl_invalid)] = CLOUD
        out[np.isin(raw, [c for c in SCL_SHADOW if c in scl_invalid])] = SHADOW
        out[np.isin(raw, [c for c in SCL_NO_DATA if c in scl_invalid])] = NO_DATA
    elif kind == "qa_pixel":
        qa = raw.astype(np.uint64)
        out[(qa & np.uint64(1 << QA_PIXEL_SHADOW)) != 0] = SHADOW
        out[(qa & np.uint64(0b1110)) != 0] = CLOUD
        out[(qa & np.uint64(1 << QA_PIXEL_FILL)) != 0] = NO_DATA
    else:
        out[raw != 0] = CLOUD
    return out


class CloudMask:
    """A cloud-mask raster seen on an image grid, read window by window as a valid mask.

    A mask on another grid (Sentinel-2's 20 m SCL under 10 m bands) is served from full-width
    strips (`io.raster.StripReader`), warped once per strip instead of once per tile: GDAL's
    warper cost ~15 ms a call, and strips read prediction's tiles of a 20 m SCL 25x faster. A mask
    on the image grid is read window by window, as its blocks come.
    """

    def __init__(self, path: str | Path, grid: Grid, config: CloudConfig | None = None,
                 kind: MaskKind | None = None, image_name: str | Path | None = None) -> None:
        self.config = config or CloudConfig()
        self.path = str(path)   # a GDAL path: remote and archive paths stay strings
        self._src = open_raster(self.path)
        self.kind = kind or guess_kind(self.path, self._src.descriptions[0])
        # Image pixels the mask does not cover are unknown: SCL no data / QA fill / cloud.
        unknown = {"scl": 0, "qa_pixel": 1, "mask": 1, "classes": NO_DATA}[self.kind]
        self._view = aligned(self._src, grid, nodata=unknown, name=self.path, other=image_name)
        # Beyond the image edge there is nothing to mask: pad clear, so clouds grow, not the border.
        self._clear = {"scl": 4, "qa_pixel": 0, "mask": 0, "classes": CLEAR}[self.kind]
        self._strips = StripReader(self._view, [1]) if self._view is not self._src else None

    def valid(self, window: Window) -> np.ndarray:
        """(h,w) bool for `window` of the image grid, with clouds grown by `dilate` pixels."""
        d = self.config.dilate
        raw = self._read(self._padded(window))
        if self.kind == "scl":
            ok = scl_valid(raw, self.config.scl_invalid)
        elif self.kind == "qa_pixel":
            ok = qa_pixel_valid(raw)
        else:
            ok = mask_valid(raw)
        return self._grown(ok, window) if d else ok

    def classes(self, window: Window) -> np.ndarray:
        """(h,w) uint8 cloud classes for `window`: why each pixel is masked (`CLASS_NAMES`)."""
        d = self.config.dilate
        classes = raw_classes(self._read(self._padded(window)), self.kind, self.config.scl_invalid)
        if not d:
            return classes
        inner = classes[d:d + int(window.height), d:d + int(window.width)].copy()
        inner[(inner == CLEAR) & ~self._grown(classes == CLEAR, window)] = GROWN
        return inner

    def _padded(self, window: Window) -> Window:
        d = self.config.dilate
        return Window(window.col_off - d, window.row_off - d, window.width + 2 * d, window.height + 2 * d)

    def _grown(self, ok: np.ndarray, window: Window) -> np.ndarray:
        """A padded valid mask with every masked pixel grown by `dilate`, cut to `window`."""
        d = self.config.dilate
        ok = ~ndimage.binary_dilation(~ok, structure=np.ones((3, 3), bool), iterations=d)
        return ok[d:d + int(window.height), d:d + int(window.width)]

    def _read(self, window: Window) -> np.ndarray:
        """(h,w) raw mask values; parts past the raster edge read as clear."""
        if self._strips is None:
            return read_window(self._view, window, 1, boundless_fill=self._clear)
        return read_padded(lambda inner: self._strips.read(inner)[0], window, self._view.width, self._view.height,
                           self._clear)

    def close(self) -> None:
        if self._view is not self._src:
            self._view.close()
        self._src.close()
