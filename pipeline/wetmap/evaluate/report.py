"""Regional Dice reports: exact masked confusion counts per region of a vector file.

The prediction is read block by block; every region touching a block is counted there by one
compiled scanline pass (`wetmap.evaluate.zonal`), so a pixel inside two overlapping regions counts for both
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

from wetmap.config import EvaluateConfig
from wetmap.evaluate.tally import RegionTally, tally
from wetmap.io.areas import PixelArea
from wetmap.io.outputs import OutputSet
from wetmap.io.raster import (
    Grid,
)
from wetmap.io.storage import staged_folder
from wetmap.io.styles import dice_qml
from wetmap.metrics import COUNT_NAMES, SCORE_NAMES, class_scores, mean_defined
from wetmap.runtime import json_safe


@dataclass(frozen=True)
class Scores:
    """Dice, IoU, precision and recall; NaN where undefined (no valid pixel), never 0 or 1."""

    dice: float
    iou: float
    precision: float
    recall: float

    @classmethod
    def of(cls, row: dict[str, Any]) -> Scores:
        return cls(*(float(row[name]) for name in SCORE_NAMES))


@dataclass(frozen=True)
class RegionScores:
    """One region's scores for the report's class (wetland), its areas and how much was clear."""

    name: str
    scores: Scores
    pred_area_ha: float
    ref_area_ha: float
    valid_fraction: float
    cloud_fraction: float


@dataclass(frozen=True)
class EvaluateResult:
    """A regional report: where it is, its headline figures, and `report`: all of report.json
    (counts, every class, inputs), with NaN where the JSON has null."""

    folder: Path | str
    class_name: str
    regions: list[RegionScores]
    micro: Scores
    macro: Scores
    report: dict[str, Any]

    @classmethod
    def of(cls, folder: Path | str, report: dict[str, Any]) -> EvaluateResult:
        regions = [RegionScores(r["name"], Scores.of(r), r["pred_area_ha"], r["ref_area_ha"], r["valid_fraction"],
                                r["cloud_fraction"]) for r in report["regions"]]
        overall = report["overall"]
        return cls(folder, report["class"], regions, Scores.of(overall["micro"]), Scores.of(overall["macro"]), report)


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
    return {"micro": {key: micro[key] for key in SCORE_NAMES},
            "macro": mean_defined([pick(r) for r in rows], SCORE_NAMES), "counts": dict(zip(COUNT_NAMES, total)),
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
             overwrite: bool = False) -> EvaluateResult:
    """Score `pred` against `truth` per region; write the tables, the styled regions and the pages
    to the folder `out_dir` (or a URL: made locally, verified, then uploaded; io.storage)."""
    with staged_folder(out_dir, overwrite, OUTPUT_NAMES) as out:
        report = _evaluate_into(pred, truth, regions, out, clouds, cfg, overwrite)
    return EvaluateResult.of(out_dir, report)


def _evaluate_into(pred: str | Path, truth: str | Path, regions: str | Path, out: Path, clouds: str | Path | None,
                   cfg: EvaluateConfig | None, overwrite: bool) -> dict[str, Any]:
    from wetmap.evaluate.pages import render_pages

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
