"""Regional Dice reports: exact masked confusion counts per region of a vector file.

The prediction is read block by block; every region touching a block is counted there by one
compiled scanline pass (`wetmap.zonal`), so a pixel inside two overlapping regions counts for both
and the cost is about one pass over the block. A pixel belongs to a region when its centre lies
inside it (GDAL's rasterize rule). Only valid pixels are scored: not no data or cloud in the
prediction (255), not cloud in an optional mask, not unknown in the truth. Scores come from summed
counts; a region without a valid pixel has an undefined (null) Dice, flagged, never 0 or 1.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.windows
import shapely

from wetmap.areas import PixelArea
from wetmap.cloud import CloudMask
from wetmap.config import EvaluateConfig
from wetmap.errors import WetmapError
from wetmap.io.outputs import OutputSet
from wetmap.io.raster import (
    GDAL_ENV,
    Grid,
    open_raster,
    read_window,
)
from wetmap.io.readahead import read_ahead
from wetmap.io.storage import staged_folder
from wetmap.io.vector import open_labels, read_polygons
from wetmap.labels import LabelCodes
from wetmap.metrics import COUNT_NAMES, class_scores, matrix_counts
from wetmap.progress import tracker
from wetmap.styles import dice_qml
from wetmap.tiling import blocks
from wetmap.zonal import ZonalCounter

NODATA = 255
BLOCK = 1024
READ_AHEAD = 3        # blocks read ahead of the counting (x 2-3 MB each)
NAME_FIELDS = ("name", "NAME", "Name", "region", "REGION", "id", "ID")
SCORE_NAMES = ("dice", "iou", "precision", "recall")


@dataclass
class RegionTally:
    """Counts of one region: confusion[truth, pred] over valid pixels, and the pixels left out."""

    name: str
    geometry: shapely.Geometry
    confusion: np.ndarray
    area: np.ndarray          # hectares of the confusion's pixels, [truth, pred] (wetmap.areas)
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


def region_names(gdf: gpd.GeoDataFrame, region_field: str | None, path: str | Path) -> list[str]:
    if region_field is not None:
        if region_field not in gdf.columns:
            fields = ", ".join(c for c in gdf.columns if c != "geometry")
            raise WetmapError(f"no field '{region_field}' (fields: {fields})", path)
        return [str(v) for v in gdf[region_field]]
    for name in NAME_FIELDS:
        if name in gdf.columns:
            return [str(v) for v in gdf[name]]
    return [f"region {i + 1}" for i in range(len(gdf))]


class BlockCounter:
    """The readers of the prediction, truth and cloud mask, and the per-region counts of their
    pixel codes (see `wetmap.zonal`), added one block at a time."""

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
    with rasterio.Env(**GDAL_ENV):
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


def class_row(counts: tuple[int, int, int, int], pred_ha: float, ref_ha: float) -> dict[str, Any]:
    tp, fp, fn, tn = counts
    s = class_scores(tp, fp, fn, tn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, **s, "dice_undefined": math.isnan(s["dice"]),
            "pred_area_ha": pred_ha, "ref_area_ha": ref_ha}


def region_row(t: RegionTally, classes: list[str], positive: int) -> dict[str, Any]:
    """The report row of one region: the positive (wetland) class's counts and scores first."""
    per_class = {name: class_row(t.class_counts(c), float(t.area[:, c].sum()), float(t.area[c].sum()))
                 for c, name in enumerate(classes)}
    pixels = t.pixels
    return {
        "name": t.name, **per_class[classes[positive]],
        "valid_fraction": int(t.confusion.sum()) / pixels if pixels else 0.0,
        "cloud_fraction": t.masked / pixels if pixels else math.nan,
        "covered_fraction": t.covered_fraction,
        "per_class": per_class,
    }


def overall(rows: list[dict[str, Any]], cls: str | None) -> dict[str, Any]:
    """Micro (from summed counts) and macro (mean over regions with a defined Dice) scores."""
    pick = (lambda r: r) if cls is None else (lambda r: r["per_class"][cls])
    total = [sum(pick(r)[name] for r in rows) for name in COUNT_NAMES]
    micro = class_row(tuple(total), sum(pick(r)["pred_area_ha"] for r in rows),
                      sum(pick(r)["ref_area_ha"] for r in rows))
    macro = {}
    for key in SCORE_NAMES:
        values = [pick(r)[key] for r in rows if not math.isnan(pick(r)[key])]
        macro[key] = float(np.mean(values)) if values else math.nan
    return {"micro": {key: micro[key] for key in SCORE_NAMES},
            "macro": macro, "counts": dict(zip(COUNT_NAMES, total)),
            "pred_area_ha": micro["pred_area_ha"], "ref_area_ha": micro["ref_area_ha"]}


def summarise(tallies: list[RegionTally], grid: Grid, classes: list[str]) -> dict[str, Any]:
    positive = classes.index("wetland") if "wetland" in classes else 1
    rows = [region_row(t, classes, positive) for t in tallies]
    pixel_area = PixelArea(grid)
    return {"class": classes[positive], "classes": classes, "pixel_area_ha": pixel_area.nominal,
            "area_method": pixel_area.method,
            "overall": {**overall(rows, None),
                        "per_class": {c: overall(rows, c) for c in classes}},
            "regions": rows}


def json_safe(obj: Any) -> Any:
    """NaN as null, so the JSON is standard and undefined scores stay visibly undefined."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


BASE_FIELDS = ["name", "tp", "fp", "fn", "tn", "dice", "iou", "precision", "recall", "dice_undefined",
               "pred_area_ha", "ref_area_ha", "valid_fraction", "cloud_fraction", "covered_fraction"]


def table_fields(classes: list[str]) -> list[str]:
    """Columns of the region table; multiclass maps add each class's scores and areas."""
    if len(classes) <= 2:
        return BASE_FIELDS
    extra = [f"{c}_{key}" for c in classes for key in (*SCORE_NAMES, "pred_area_ha", "ref_area_ha")]
    return BASE_FIELDS + extra


def flat_row(row: dict[str, Any], classes: list[str]) -> dict[str, Any]:
    flat = {k: row[k] for k in BASE_FIELDS}
    if len(classes) > 2:
        for c in classes:
            for key in (*SCORE_NAMES, "pred_area_ha", "ref_area_ha"):
                flat[f"{c}_{key}"] = row["per_class"][c][key]
    return flat


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def regions_frame(tallies: list[RegionTally], flat: list[dict[str, Any]], grid: Grid) -> gpd.GeoDataFrame:
    """The regions (on the prediction's CRS) with their metric fields; undefined scores are null."""
    return gpd.GeoDataFrame(flat, geometry=[t.geometry for t in tallies], crs=grid.crs)


OUTPUT_NAMES = ("regions.csv", "report.json", "regions.gpkg", "regions.qml", "report.md", "map.png",
                "dice_by_region.png", "report.html")


def evaluate(pred: str | Path, truth: str | Path, regions: str | Path, out_dir: str | Path,
             clouds: str | Path | None = None, cfg: EvaluateConfig | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Score `pred` against `truth` per region; write the tables, the styled regions and the pages
    to the folder `out_dir` (or a URL: made locally, verified, then uploaded; io.storage)."""
    with staged_folder(out_dir, overwrite, OUTPUT_NAMES) as out:
        report = _evaluate_into(pred, truth, regions, out, clouds, cfg, overwrite)
    return report


def _evaluate_into(pred: str | Path, truth: str | Path, regions: str | Path, out: Path, clouds: str | Path | None,
                   cfg: EvaluateConfig | None, overwrite: bool) -> dict[str, Any]:
    from wetmap.report_pages import render_pages

    # report.html last: once it is there, the tables, styles and figures beside it are this run's.
    with OutputSet([out / name for name in OUTPUT_NAMES], overwrite) as outputs:
        tallies, grid, classes = tally(pred, truth, regions, clouds, cfg)
        report = summarise(tallies, grid, classes)
        report["inputs"] = {"prediction": str(pred), "truth": str(truth), "regions": str(regions),
                            "clouds": str(clouds) if clouds else None}
        fields = table_fields(classes)
        flat = [flat_row(r, classes) for r in report["regions"]]
        write_csv(outputs[out / "regions.csv"], flat, fields)
        outputs[out / "report.json"].write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))
        regions_frame(tallies, flat, grid).to_file(outputs[out / "regions.gpkg"], layer="regions", driver="GPKG",
                                                   engine="pyogrio")
        outputs[out / "regions.qml"].write_text(dice_qml(report["class"]))
        for name, data in render_pages(report, tallies, pred, grid).items():
            outputs[out / name].write_bytes(data)
    return report
