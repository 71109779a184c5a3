"""Regional Dice reports: exact masked confusion counts per region of a vector file.

The prediction is read block by block; for every region that touches a block, the pixels whose
centre lies inside it are counted (overlapping regions each count a pixel). Only valid pixels are
scored: not no data or cloud in the prediction (255), not cloud in an optional mask, not unknown
in the truth. Scores come from summed counts; a region without a valid pixel has an undefined
(null) Dice, flagged, never 0 or 1.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely

from wetmap.cloud import CloudMask
from wetmap.config import EvaluateConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import GDAL_ENV, Grid, atomic_output, check_writable, open_raster, read_window
from wetmap.io.vector import burn, open_labels, read_polygons
from wetmap.metrics import COUNT_NAMES, class_scores, confusion
from wetmap.tiling import TileGrid

NODATA = 255
BLOCK = 1024
NAME_FIELDS = ("name", "NAME", "Name", "region", "REGION", "id", "ID")


@dataclass
class RegionTally:
    name: str
    geometry: shapely.Geometry
    counts: np.ndarray
    pixels: int = 0          # region pixels inside the raster
    masked: int = 0          # of those: no data or cloud (prediction 255 or cloud mask)
    expected_pixels: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def region_names(gdf, region_field: str | None, path: str | Path) -> list[str]:
    if region_field is not None:
        if region_field not in gdf.columns:
            raise WetmapError(f"no field '{region_field}' (fields: {', '.join(c for c in gdf.columns if c != 'geometry')})", path)
        return [str(v) for v in gdf[region_field]]
    for name in NAME_FIELDS:
        if name in gdf.columns:
            return [str(v) for v in gdf[name]]
    return [f"region {i + 1}" for i in range(len(gdf))]


def tally(pred: str | Path, truth: str | Path, regions: str | Path, clouds: str | Path | None = None,
          cfg: EvaluateConfig | None = None) -> tuple[list[RegionTally], Grid, list[str]]:
    """Stream the prediction once and count TP/FP/FN/TN per class for every region."""
    cfg = cfg or EvaluateConfig()
    with rasterio.Env(**GDAL_ENV), open_raster(pred) as src:
        grid = Grid.of(src)
        classes = (src.tags().get("CLASSES") or "other,wetland").split(",")
        k = len(classes)
        gdf = read_polygons(regions, grid.crs)
        names = region_names(gdf, cfg.region_field, regions)
        tallies = [RegionTally(n, g, np.zeros((k, 4), np.int64), expected_pixels=g.area / grid.res ** 2)
                   for n, g in zip(names, gdf.geometry)]
        labels = open_labels(truth, grid, image_name=pred, unknown=NODATA)
        mask = CloudMask(clouds, grid, cfg.cloud, image_name=pred) if clouds else None
        try:
            for tile in TileGrid(grid.width, grid.height, BLOCK):
                window = tile.window
                box = shapely.box(*rasterio.windows.bounds(window, grid.transform))
                touching = [t for t in tallies if t.geometry.intersects(box)]
                if not touching:
                    continue
                p = read_window(src, window, 1)
                y = labels.read(window)
                ok = (p != NODATA) & (y != NODATA)
                unusable = p == NODATA
                if mask is not None:
                    clear = mask.valid(window)
                    ok &= clear
                    unusable |= ~clear
                transform = grid.window_transform(window)
                for t in touching:
                    inside = burn([t.geometry], transform, p.shape).astype(bool)
                    t.pixels += int(inside.sum())
                    t.masked += int((inside & unusable).sum())
                    t.counts += confusion(p, y, inside & ok, k)
        finally:
            labels.close()
            if mask is not None:
                mask.close()
    return tallies, grid, classes


def _clean(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def region_row(t: RegionTally, pixel_ha: float, positive: int) -> dict[str, Any]:
    """The report row of one region: counts and scores of the positive (wetland) class."""
    tp, fp, fn, tn = (int(v) for v in t.counts[positive])
    s = class_scores(tp, fp, fn, tn)
    valid = tp + fp + fn + tn
    return {
        "name": t.name, "tp": tp, "fp": fp, "fn": fn, "tn": tn, **s,
        "dice_undefined": math.isnan(s["dice"]),
        "pred_area_ha": (tp + fp) * pixel_ha, "ref_area_ha": (tp + fn) * pixel_ha,
        "valid_fraction": valid / t.pixels if t.pixels else 0.0,
        "cloud_fraction": t.masked / t.pixels if t.pixels else math.nan,
        "covered_fraction": min(1.0, t.pixels / t.expected_pixels) if t.expected_pixels else 0.0,
    }


def summarise(tallies: list[RegionTally], grid: Grid, classes: list[str]) -> dict[str, Any]:
    positive = classes.index("wetland") if "wetland" in classes else 1
    pixel_ha = grid.res ** 2 / 10_000
    rows = [region_row(t, pixel_ha, positive) for t in tallies]
    total = np.sum([t.counts[positive] for t in tallies], axis=0) if tallies else np.zeros(4, np.int64)
    micro = class_scores(*(int(v) for v in total))
    defined = [r["dice"] for r in rows if not r["dice_undefined"]]
    macro_dice = float(np.mean(defined)) if defined else math.nan
    return {"class": classes[positive], "overall": {"micro": micro, "macro": {"dice": macro_dice},
                                                   "counts": dict(zip(COUNT_NAMES, (int(v) for v in total)))},
            "regions": rows}


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return _clean(obj)
    return obj


CSV_FIELDS = ["name", "tp", "fp", "fn", "tn", "dice", "iou", "precision", "recall", "dice_undefined",
              "pred_area_ha", "ref_area_ha", "valid_fraction", "cloud_fraction", "covered_fraction"]


def evaluate(pred: str | Path, truth: str | Path, regions: str | Path, out_dir: str | Path,
             clouds: str | Path | None = None, cfg: EvaluateConfig | None = None,
             overwrite: bool = False) -> dict[str, Any]:
    """Score `pred` against `truth` per region; write regions.csv and report.json to `out_dir`."""
    out = Path(out_dir)
    csv_path, json_path = out / "regions.csv", out / "report.json"
    for path in (csv_path, json_path):
        check_writable(path, overwrite)
    tallies, grid, classes = tally(pred, truth, regions, clouds, cfg)
    report = summarise(tallies, grid, classes)
    report["inputs"] = {"prediction": str(pred), "truth": str(truth), "regions": str(regions),
                        "clouds": str(clouds) if clouds else None}
    with atomic_output(csv_path, overwrite) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in report["regions"]:
            writer.writerow({k: ("" if _clean(row[k]) is None else row[k]) for k in CSV_FIELDS})
    with atomic_output(json_path, overwrite) as tmp:
        tmp.write_text(json.dumps(_json_safe(report), indent=2, allow_nan=False))
    return report
