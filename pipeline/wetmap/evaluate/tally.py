"""Counting: the prediction read block by block, each region's confusion counted by one scanline pass."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.windows
import shapely

from wetmap.config import EvaluateConfig
from wetmap.errors import WetmapError
from wetmap.evaluate.zonal import ZonalCounter
from wetmap.io.areas import PixelArea
from wetmap.io.labels import LabelCodes
from wetmap.io.raster import (
    Grid,
    open_raster,
    read_window,
)
from wetmap.io.readahead import read_ahead
from wetmap.io.vector import open_labels, read_polygons, region_names
from wetmap.io.windows import blocks
from wetmap.masks.cloud import CloudMask
from wetmap.metrics import matrix_counts
from wetmap.progress import tracker
from wetmap.runtime import gdal_env

NODATA = 255

BLOCK = 1024

READ_AHEAD = 3        # blocks read ahead of the counting (x 2-3 MB each)

@dataclass
class RegionTally:
    """Counts of one region: confusion[truth, pred] over valid pixels, and the pixels left out."""

    name: str
    geometry: shapely.Geometry
    confusion: np.ndarray
    area: np.ndarray          # hectares of the confusion's pixels, [truth, pred] (wetmap.io.areas)
    masked: int = 0           # no data or cloud (prediction 255 or cloud mask)
    unknown: int = 0          # usable prediction, but the truth is unknown there
    covered_fraction: float = 0.0

    @property
    def pixels(self) -> int:
        """Pixels of the raster whose centre lies inside the region."""
        return int(self.confusion.sum()) + self.masked + self.unknown

    def class_counts(self, c: int) -> tuple[int, int, int, int]:
        tp, fp, fn, tn = (int(v[c]) for v in matrix_counts(self.confusion))
        return tp, fp, fn, tn


class BlockCounter:
    """The readers of the prediction, truth and cloud mask, and the per-region counts of their
    pixel codes (see `wetmap.evaluate.zonal`), added one block at a time."""

    def __init__(self, pred: str | Path, truth: str | Path, clouds: str | Path | None, grid: Grid,
                 cfg: EvaluateConfig, k: int, geoms: list[shapely.Geometry], codes: LabelCodes | None = None) -> None:
        self.grid, self.k = grid, k
        self.tree = shapely.STRtree(geoms)
        self.zonal = ZonalCounter(geoms, grid.transform, k)
        self.src = open_raster(pred)
        self.labels = open_labels(truth, grid, image_name=pred, unknown=NODATA, codes=codes)
        self.mask = CloudMask(clouds, grid, cfg.cloud, image_name=pred) if clouds else None

    def work(self, windows: list[rasterio.windows.Window]) -> list[tuple[rasterio.windows.Window, np.ndarray]]:
        """(window, indexes of the regions that touch it) for the windows that any region touches."""
        boxes = shapely.box(*np.array([rasterio.windows.bounds(w, self.grid.transform) for w in windows]).T)
        window_of, region = self.tree.query(boxes, predicate="intersects")
        return [(windows[i], region[window_of == i]) for i in np.unique(window_of)]

    def read(self, window: rasterio.windows.Window) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Prediction, truth and clear mask of `window`; a prediction value that is no class is an error."""
        pred = read_window(self.src, window, 1)
        bad = (pred >= self.k) & (pred != NODATA)
        if bad.any():
            found = ", ".join(str(v) for v in np.unique(pred[bad])[:6])
            raise WetmapError(f"values {found}... are not classes (0-{self.k - 1}) or {NODATA}: not a class map "
                              "(the probability raster, or a scene?); evaluate the classes OUT.tif that "
                              "wetmap predict writes", self.src.name)
        return pred, self.labels.read(window), self.mask.valid(window) if self.mask is not None else None

    def close(self) -> None:
        self.labels.close()
        if self.mask is not None:
            self.mask.close()
        self.src.close()


def tally(pred: str | Path, truth: str | Path, regions: str | Path, clouds: str | Path | None = None,
          cfg: EvaluateConfig | None = None) -> tuple[list[RegionTally], Grid, list[str]]:
    """Stream the prediction once and count the confusion matrix of every region.

    Blocks that touch no region are never read. A thread reads the next blocks while this one
    counts: GDAL decodes and the counting kernel both run without the GIL. (Two threads that each
    read and count were measured slower: reads from two threads contend inside GDAL.)
    """
    cfg = cfg or EvaluateConfig()
    with gdal_env():
        with open_raster(pred) as src:
            grid = Grid.of(src)
            classes = (src.tags().get("CLASSES") or "other,wetland").split(",")
            if src.count != 1 or np.dtype(src.dtypes[0]).kind not in "iu":
                raise WetmapError(f"not a class map: {src.count} band(s) of {src.dtypes[0]}; evaluate takes the "
                                  "one-band integer class raster that wetmap predict writes", pred)
        k = len(classes)
        gdf = read_polygons(regions, grid.crs)
        names = region_names(gdf, cfg.region_field, regions)
        geoms = list(gdf.geometry)
        counter = BlockCounter(pred, truth, clouds, grid, cfg, k, geoms, LabelCodes.of(classes, cfg.label_values))
        pixel_area = PixelArea(grid)
        areas = np.zeros((len(geoms), k * k))
        counts = counter.zonal.counts
        try:
            work = counter.work(list(blocks(grid.width, grid.height, BLOCK)))
            with tracker("evaluate", len(work), "blocks") as advance:
                for (window, hits), *layers in read_ahead(work, lambda item: counter.read(item[0]), READ_AHEAD):
                    block_pred, block_truth, block_clear = layers
                    before = counts[hits, :k * k].copy()
                    counter.zonal.add(block_pred, block_truth, block_clear, int(window.row_off), int(window.col_off),
                                      hits)
                    areas[hits] += (counts[hits, :k * k] - before) * pixel_area.of(window)
                    advance(1)
        finally:
            counter.close()
    footprint = shapely.box(*grid.bounds)
    return [RegionTally(n, g, row[:k * k].reshape(k, k).copy(), a.reshape(k, k), masked=int(row[k * k]),
                        unknown=int(row[k * k + 1]),
                        covered_fraction=min(1.0, g.intersection(footprint).area / g.area) if g.area else 0.0)
            for n, g, row, a in zip(names, geoms, counts, areas)], grid, classes
