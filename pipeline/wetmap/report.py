"""Regional Dice reports: exact masked confusion counts per region of a vector file.

The prediction is read block by block. Regions are burned into the block as region ids, in as few
layers as keep overlapping regions apart (a pixel inside two overlapping regions counts for both),
and one bincount per layer gives every region's confusion matrix: the cost is a few passes over the
block, not one per region. A pixel belongs to a region when its centre lies inside it. Only valid
pixels are scored: not no data or cloud in the prediction (255), not cloud in an optional mask, not
unknown in the truth. Scores come from summed counts; a region without a valid pixel has an
undefined (null) Dice, flagged, never 0 or 1.
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
import rasterio.features
import rasterio.windows
import shapely

from wetmap.cloud import CloudMask
from wetmap.config import EvaluateConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import (
    GDAL_ENV,
    Grid,
    atomic_output,
    check_writable,
    open_raster,
    read_window,
)
from wetmap.io.vector import open_labels, read_polygons
from wetmap.metrics import COUNT_NAMES, class_scores, matrix_counts
from wetmap.styles import dice_qml, write_qml
from wetmap.tiling import blocks

NODATA = 255
BLOCK = 1024
NAME_FIELDS = ("name", "NAME", "Name", "region", "REGION", "id", "ID")
SCORE_NAMES = ("dice", "iou", "precision", "recall")


@dataclass
class RegionTally:
    """Counts of one region: confusion[truth, pred] over valid pixels, and the pixels left out."""

    name: str
    geometry: shapely.Geometry
    confusion: np.ndarray
    masked: int = 0           # no data or cloud (prediction 255 or cloud mask)
    unknown: int = 0          # usable prediction, but the truth is unknown there
    covered_fraction: float = 0.0

    @property
    def pixels(self) -> int:
        """Pixels of the raster whose centre lies inside the region."""
        return int(self.confusion.sum()) + self.masked + self.unknown

    def class_counts(self, c: int) -> tuple[int, int, int, int]:
        return tuple(int(v[c]) for v in matrix_counts(self.confusion))


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


def overlap_layers(geoms: list[shapely.Geometry]) -> list[list[int]]:
    """Group region indexes so that no two regions in a group share interior (greedy colouring).

    Regions that only touch may share a group: a pixel centre belongs to at most one of them.
    """
    tree = shapely.STRtree(geoms)
    layers: list[list[int]] = []
    for i, g in enumerate(geoms):
        clash = {int(j) for j in tree.query(g, predicate="intersects")
                 if j != i and not g.touches(geoms[j])}
        for layer in layers:
            if clash.isdisjoint(layer):
                layer.append(i)
                break
        else:
            layers.append([i])
    return layers


class Buffers:
    """Reused per-block arrays: fresh megabyte arrays for every block cost page faults, a visible
    share of the pass on highly compressible maps, which decode fast."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._flat: dict[tuple[str, str], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: type) -> np.ndarray:
        key = (name, np.dtype(dtype).str)
        if key not in self._flat:
            self._flat[key] = np.empty(self.size * self.size, dtype)
        return self._flat[key][: shape[0] * shape[1]].reshape(shape)


def pixel_codes(pred: np.ndarray, truth: np.ndarray, clear: np.ndarray | None, k: int,
                buffers: Buffers | None = None) -> np.ndarray:
    """Per pixel: truth * k + pred where scorable, k*k where masked, k*k + 1 where truth unknown.

    Small integers (uint8 for up to 15 classes): counting them is then a few byte-wide passes.
    """
    buffers = buffers or Buffers(max(pred.shape))
    dtype = np.uint8 if k * k + 2 <= 256 else np.uint16
    code = buffers.get("code", pred.shape, dtype)
    flag = buffers.get("flag", pred.shape, bool)
    np.multiply(truth, dtype(k), out=code, casting="unsafe")     # wraps where invalid: overwritten below
    np.add(code, pred, out=code, casting="unsafe")
    np.greater_equal(truth, k, out=flag)
    np.copyto(code, dtype(k * k + 1), where=flag)
    np.greater_equal(pred, k, out=flag)
    if clear is not None:
        np.logical_or(flag, ~clear, out=flag)
    np.copyto(code, dtype(k * k), where=flag)
    return code


def value_counts(key: np.ndarray, start: int, stop: int, buffers: Buffers | None = None) -> np.ndarray:
    """How often each value start..stop-1 occurs in `key`.

    For a few dozen values, comparing and counting (byte-wide, vectorised) beats np.bincount,
    which first widens every pixel to 64 bits.
    """
    if stop - start > 48:
        return np.bincount(key.ravel().astype(np.intp), minlength=stop)[start:stop].astype(np.int64)
    hit = (buffers or Buffers(max(key.shape))).get("hit", key.shape, bool)
    counts = np.empty(stop - start, np.int64)
    for i, value in enumerate(range(start, stop)):
        np.equal(key, value, out=hit)
        counts[i] = np.count_nonzero(hit)
    return counts


@dataclass
class Layer:
    """Regions that share no interior, burned together as ids into one raster per block."""

    members: list[int]
    tree: shapely.STRtree


class BlockCounter:
    """Counts the pixel codes of every region, one block at a time, with reused buffers."""

    def __init__(self, pred: str | Path, truth: str | Path, clouds: str | Path | None, grid: Grid,
                 cfg: EvaluateConfig, k: int, geoms: list[shapely.Geometry]) -> None:
        self.grid, self.k, self.geoms = grid, k, geoms
        self.layers = [Layer(m, shapely.STRtree([geoms[i] for i in m])) for m in overlap_layers(geoms)]
        self.bins = k * k + 2
        self.buffers = Buffers(BLOCK)
        self.src = open_raster(pred)
        self.labels = open_labels(truth, grid, image_name=pred, unknown=NODATA)
        self.mask = CloudMask(clouds, grid, cfg.cloud, image_name=pred) if clouds else None

    def hits(self, window: rasterio.windows.Window) -> list[tuple[Layer, np.ndarray]]:
        """Per layer, the (layer-local) regions that touch `window`; empty when none does."""
        box = shapely.box(*rasterio.windows.bounds(window, self.grid.transform))
        found = [(layer, layer.tree.query(box, predicate="intersects")) for layer in self.layers]
        return found if any(len(local) for _, local in found) else []

    def read(self, window: rasterio.windows.Window) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Prediction, truth and clear mask of `window`."""
        return (read_window(self.src, window, 1), self.labels.read(window),
                self.mask.valid(window) if self.mask is not None else None)

    def count(self, window: rasterio.windows.Window, hits: list[tuple[Layer, np.ndarray]], pred: np.ndarray,
              truth: np.ndarray, clear: np.ndarray | None) -> dict[int, np.ndarray]:
        """{region index: counts of each pixel code} over the pixels of `window` inside each region."""
        box = shapely.box(*rasterio.windows.bounds(window, self.grid.transform))
        code = pixel_codes(pred, truth, clear, self.k, self.buffers)
        whole: np.ndarray | None = None
        out: dict[int, np.ndarray] = {}
        for layer, local in hits:
            partial = []
            for j in local:
                index = layer.members[j]
                if shapely.contains_properly(self.geoms[index], box):    # every pixel centre is inside
                    whole = value_counts(code, 0, self.bins, self.buffers) if whole is None else whole
                    out[index] = whole
                else:
                    partial.append(index)
            if partial:
                out.update(self._count_partial(code, partial, window, box))
        return out

    def _count_partial(self, code: np.ndarray, regions: list[int], window: rasterio.windows.Window,
                       box: shapely.Polygon) -> dict[int, np.ndarray]:
        """Burn the regions as ids 1..n (clipped to the block: fewer edges to scan) and count
        (id, code) pairs in one byte-wide key."""
        n, bins = len(regions), self.bins
        small = (n + 1) * bins <= 256
        ids = self.buffers.get("ids", code.shape, np.uint8 if small else np.int32)
        ids.fill(0)
        x0, y0, x1, y1 = box.bounds
        pad = 2 * self.grid.res
        clipped = shapely.clip_by_rect([self.geoms[i] for i in regions], x0 - pad, y0 - pad, x1 + pad, y1 + pad)
        shapes = [(g, r + 1) for r, g in enumerate(clipped) if not g.is_empty]   # touching only: nothing inside
        if shapes:
            rasterio.features.rasterize(shapes, out=ids, transform=self.grid.window_transform(window),
                                        all_touched=False)
        if small:
            key = self.buffers.get("key", code.shape, np.uint8)
            np.multiply(ids, np.uint8(bins), out=key)
            np.add(key, code, out=key)
        else:
            key = ids.astype(np.intp) * bins + code
        counts = value_counts(key, bins, (n + 1) * bins, self.buffers).reshape(n, bins)
        return dict(zip(regions, counts))

    def close(self) -> None:
        self.labels.close()
        if self.mask is not None:
            self.mask.close()
        self.src.close()


def tally(pred: str | Path, truth: str | Path, regions: str | Path, clouds: str | Path | None = None,
          cfg: EvaluateConfig | None = None) -> tuple[list[RegionTally], Grid, list[str]]:
    """Stream the prediction once and count the confusion matrix of every region.

    Blocks that touch no region are never read. (Reading ahead in a thread was measured slower
    here: GDAL's rasterize holds the GIL, and the reader then competes for it.)
    """
    cfg = cfg or EvaluateConfig()
    with rasterio.Env(**GDAL_ENV):
        with open_raster(pred) as src:
            grid = Grid.of(src)
            classes = (src.tags().get("CLASSES") or "other,wetland").split(",")
        k = len(classes)
        gdf = read_polygons(regions, grid.crs)
        names = region_names(gdf, cfg.region_field, regions)
        footprint = shapely.box(*grid.bounds)
        geoms = list(gdf.geometry)
        shapely.prepare(geoms)
        tallies = [RegionTally(n, g, np.zeros((k, k), np.int64),
                               covered_fraction=min(1.0, g.intersection(footprint).area / g.area) if g.area else 0.0)
                   for n, g in zip(names, geoms)]
        counter = BlockCounter(pred, truth, clouds, grid, cfg, k, geoms)
        try:
            for window in blocks(grid.width, grid.height, BLOCK):
                hits = counter.hits(window)
                if not hits:
                    continue
                for index, row in counter.count(window, hits, *counter.read(window)).items():
                    t = tallies[index]
                    t.confusion += row[:k * k].reshape(k, k)
                    t.masked += int(row[k * k])
                    t.unknown += int(row[k * k + 1])
        finally:
            counter.close()
    return tallies, grid, classes


def class_row(counts: tuple[int, int, int, int], pixel_ha: float) -> dict[str, Any]:
    tp, fp, fn, tn = counts
    s = class_scores(tp, fp, fn, tn)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, **s, "dice_undefined": math.isnan(s["dice"]),
            "pred_area_ha": (tp + fp) * pixel_ha, "ref_area_ha": (tp + fn) * pixel_ha}


def region_row(t: RegionTally, classes: list[str], positive: int, pixel_ha: float) -> dict[str, Any]:
    """The report row of one region: the positive (wetland) class's counts and scores first."""
    per_class = {name: class_row(t.class_counts(c), pixel_ha) for c, name in enumerate(classes)}
    pixels = t.pixels
    return {
        "name": t.name, **per_class[classes[positive]],
        "valid_fraction": int(t.confusion.sum()) / pixels if pixels else 0.0,
        "cloud_fraction": t.masked / pixels if pixels else math.nan,
        "covered_fraction": t.covered_fraction,
        "per_class": per_class,
    }


def overall(rows: list[dict[str, Any]], cls: str | None, pixel_ha: float) -> dict[str, Any]:
    """Micro (from summed counts) and macro (mean over regions with a defined Dice) scores."""
    pick = (lambda r: r) if cls is None else (lambda r: r["per_class"][cls])
    total = [sum(pick(r)[name] for r in rows) for name in COUNT_NAMES]
    micro = class_row(tuple(total), pixel_ha)
    macro = {}
    for key in SCORE_NAMES:
        values = [pick(r)[key] for r in rows if not math.isnan(pick(r)[key])]
        macro[key] = float(np.mean(values)) if values else math.nan
    return {"micro": {key: micro[key] for key in SCORE_NAMES},
            "macro": macro, "counts": dict(zip(COUNT_NAMES, total)),
            "pred_area_ha": micro["pred_area_ha"], "ref_area_ha": micro["ref_area_ha"]}


def summarise(tallies: list[RegionTally], grid: Grid, classes: list[str]) -> dict[str, Any]:
    positive = classes.index("wetland") if "wetland" in classes else 1
    pixel_ha = grid.res ** 2 / 10_000
    rows = [region_row(t, classes, positive, pixel_ha) for t in tallies]
    return {"class": classes[positive], "classes": classes, "pixel_area_ha": pixel_ha,
            "overall": {**overall(rows, None, pixel_ha),
                        "per_class": {c: overall(rows, c, pixel_ha) for c in classes}},
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


OUTPUT_NAMES = ("regions.csv", "report.json", "regions.gpkg", "regions.qml", "report.html", "report.md",
                "map.png", "dice_by_region.png")


def evaluate(pred: str | Path, truth: str | Path, regions: str | Path, out_dir: str | Path,
             clouds: str | Path | None = None, cfg: EvaluateConfig | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Score `pred` against `truth` per region; write the tables, the styled regions and the pages."""
    from wetmap.report_pages import render_pages

    out = Path(out_dir)
    for name in OUTPUT_NAMES:
        check_writable(out / name, overwrite)
    tallies, grid, classes = tally(pred, truth, regions, clouds, cfg)
    report = summarise(tallies, grid, classes)
    report["inputs"] = {"prediction": str(pred), "truth": str(truth), "regions": str(regions),
                        "clouds": str(clouds) if clouds else None}
    fields = table_fields(classes)
    flat = [flat_row(r, classes) for r in report["regions"]]
    with atomic_output(out / "regions.csv", overwrite) as tmp:
        write_csv(tmp, flat, fields)
    with atomic_output(out / "report.json", overwrite) as tmp:
        tmp.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False))
    with atomic_output(out / "regions.gpkg", overwrite) as tmp:
        regions_frame(tallies, flat, grid).to_file(tmp, layer="regions", driver="GPKG", engine="pyogrio")
    write_qml(out / "regions.gpkg", dice_qml(report["class"]))
    render_pages(report, tallies, pred, grid, out, overwrite)
    return report
