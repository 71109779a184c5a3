"""The change raster: two runs' class maps compared pixel by pixel on the newer one's grid.

Classes: stable other, stable wetland, gained, lost; 255 (no data) where either run had no clear
view (cloud, shadow, no data, outside its extent), so change is never claimed through a cloud.
The older map is put onto the newer one's grid by nearest neighbour (io.vector.RasterLabels), as
labels are, so two runs on different grids still compare pixel for pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rasterio.windows import Window

from wetmap.errors import WetmapError
from wetmap.io.checksum import StripChecksum
from wetmap.io.cog import NODATA, open_strip_writer, to_cog, write_strip
from wetmap.io.labels import LabelCodes
from wetmap.io.outputs import OutputSet
from wetmap.io.raster import Grid, open_raster, read_window
from wetmap.io.styles import paletted_qml
from wetmap.io.vector import RasterLabels
from wetmap.predict.classes import wetland_index
from wetmap.runtime import gdal_env

STABLE_OTHER, STABLE_WETLAND, GAINED, LOST = 0, 1, 2, 3
CHANGE_NAMES = {STABLE_OTHER: "stable other", STABLE_WETLAND: "stable wetland", GAINED: "gained", LOST: "lost"}
# Okabe-Ito blue and vermillion for gain and loss (told apart with any colour vision), stable
# classes muted so that change stands out; unknown (255) is transparent.
CHANGE_COLORS: dict[int, tuple[int, int, int, int]] = {
    STABLE_OTHER: (235, 235, 235, 255), STABLE_WETLAND: (160, 200, 180, 255),
    GAINED: (0, 114, 178, 255), LOST: (213, 94, 0, 255),
}
STRIP_ROWS = 256


def map_classes(path: str | Path) -> list[str]:
    """The classes of a wetmap class map (its CLASSES tag), refusing any other raster."""
    with open_raster(path) as src:
        if src.count != 1 or src.dtypes[0] != "uint8" or "CLASSES" not in src.tags():
            raise WetmapError("not a wetmap class map (one uint8 band with a CLASSES tag)", path)
        return src.tags()["CLASSES"].split(",")


def change_codes(previous: np.ndarray, current: np.ndarray, wet: int) -> np.ndarray:
    """The change class of every pixel; NODATA where either map has no data."""
    was, now = previous == wet, current == wet
    codes = np.where(was, np.where(now, STABLE_WETLAND, LOST), np.where(now, GAINED, STABLE_OTHER)).astype(np.uint8)
    codes[(previous == NODATA) | (current == NODATA)] = NODATA
    return codes


def check_same_classes(previous: str | Path, current: str | Path) -> list[str]:
    """The classes both maps share; two runs that map different classes are not compared."""
    before, now = map_classes(previous), map_classes(current)
    if before != now:
        raise WetmapError(f"maps the classes {', '.join(before)}, the new run {', '.join(now)}: wetland change "
                          "is only measured between maps of the same classes", previous)
    return now


def write_change_raster(outputs: OutputSet, previous: str | Path, current: str | Path, out: Path,
                        tags: dict[str, str]) -> tuple[Grid, list[str]]:
    """Stream the change of `previous` -> `current` into the COG `out` and its QGIS style, both
    in `outputs`; return the grid (the current map's) and the classes both maps share."""
    classes = check_same_classes(previous, current)
    wet = wetland_index(classes)
    strips = outputs.scratch(out, ".strips.tif")
    with gdal_env(), open_raster(current) as src:
        grid = Grid.of(src)
        older = RasterLabels(previous, grid, image_name=current, unknown=NODATA, codes=LabelCodes(tuple(classes)))
        dst = open_strip_writer(strips, grid, "uint8", f"{classes[wet]} change", CHANGE_COLORS,
                                {**tags, "CLASSES": ",".join(CHANGE_NAMES.values())})
        written = StripChecksum(grid.width, grid.height)   # what the COG must hold (io.checksum)
        try:
            for row in range(0, grid.height, STRIP_ROWS):
                window = Window(0, row, grid.width, min(STRIP_ROWS, grid.height - row))
                codes = change_codes(older.read(window), read_window(src, window, 1), wet)
                write_strip(dst, row, codes)
                written.add(row, codes)
        finally:
            dst.close()
            older.close()
    outputs.expect(out, [written.value])
    to_cog(strips, outputs[out], "NEAREST")
    outputs[out.with_suffix(".qml")].write_text(paletted_qml(CHANGE_NAMES, CHANGE_COLORS, NODATA))
    return grid, classes
