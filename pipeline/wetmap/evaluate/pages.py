"""The readable side of a regional report: a map, a bar chart, and the table as HTML and Markdown.

The map reads the prediction decimated (GDAL serves it from the COG's overviews), so it costs a
few megabytes whatever the raster's size. Figures use matplotlib's object API, not pyplot, so
rendering never touches a user's interactive backend. The HTML embeds its figures and stands
alone (easy to mail or attach to a ticket); the Markdown links the PNGs beside it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from wetmap.io.raster import Grid
from wetmap.io.styles import CLASS_COLORS, DICE_BINS, UNDEFINED_COLOR, dice_color
from wetmap.runtime import gdal_env

if TYPE_CHECKING:
    from wetmap.evaluate.tally import RegionTally


MAP_PIXELS = 1200

NODATA_VEIL = (0.45, 0.45, 0.45, 0.6)

COLUMNS = [("name", "region", ""), ("dice", "Dice", ".3f"), ("iou", "IoU", ".3f"),
           ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
           ("pred_area_ha", "predicted ha", ",.1f"), ("ref_area_ha", "reference ha", ",.1f"),
           ("valid_fraction", "valid", ".1%"), ("cloud_fraction", "cloud / no data", ".1%"),
           ("covered_fraction", "covered", ".1%"), ("tp", "TP", ","), ("fp", "FP", ","), ("fn", "FN", ",")]


def fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "undefined"
    return format(value, spec) if spec else str(value)


def _rgb(color: tuple[int, ...], alpha: float = 1.0) -> tuple[float, float, float, float]:
    return (color[0] / 255, color[1] / 255, color[2] / 255, alpha)


def prediction_preview(pred: str | Path) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """An RGBA overlay of the class raster at most MAP_PIXELS wide, and its extent (l, r, b, t).

    Classes other than the first keep their palette colour; the first ("other") is transparent so
    the regions show through; no data and cloud are a grey veil.
    """
    with gdal_env(), rasterio.open(pred) as src:
        scale = max(1.0, max(src.width, src.height) / MAP_PIXELS)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        classes = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        try:
            palette = src.colormap(1)
        except ValueError:
            palette = CLASS_COLORS
        b = src.bounds
    lut = np.zeros((256, 4), np.float32)
    for value, color in palette.items():
        lut[value] = _rgb(color)
    lut[0] = 0.0
    lut[255] = NODATA_VEIL
    return lut[classes], (b.left, b.right, b.bottom, b.top)


def map_figure(report: dict[str, Any], tallies: list[RegionTally], pred: str | Path, grid: Grid) -> Figure:
    """The regions filled by Dice class, with the predicted classes and the no-data veil on top."""
    image, extent = prediction_preview(pred)
    footprint = shapely.box(extent[0], extent[2], extent[1], extent[3])
    fig = Figure(figsize=(9, 8), dpi=110)
    ax = fig.add_subplot()
    shapes = gpd.GeoSeries([t.geometry for t in tallies], crs=grid.crs)
    undefined = np.array([row["dice_undefined"] for row in report["regions"]], bool)
    fills = [_rgb(dice_color(row["dice"]), 0.55) for row in report["regions"]]
    for chosen, hatch in ((~undefined, None), (undefined, "//")):
        if chosen.any():
            shapes[chosen].plot(ax=ax, facecolor=[f for f, c in zip(fills, chosen) if c], edgecolor="none",
                                hatch=hatch, zorder=1)
    ax.imshow(image, extent=extent, interpolation="nearest", zorder=2)
    shapes.boundary.plot(ax=ax, color=(0.1, 0.1, 0.1), linewidth=1.0, zorder=3)
    for t, row in zip(tallies, report["regions"]):
        visible = t.geometry.intersection(footprint)
        if visible.is_empty:
            continue
        p = visible.representative_point()
        ax.annotate(f"{row['name']}\n{fmt(row['dice'], '.2f')}", (p.x, p.y), ha="center", va="center",
                    fontsize=8, zorder=4, bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.75, "lw": 0})
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_title(f"{report['class']} Dice per region, predicted {report['class']} on top")
    ax.set_xlabel(f"x ({grid.crs.to_string()})")
    ax.set_ylabel("y")
    ax.ticklabel_format(style="plain", useOffset=False)
    legend = [Patch(facecolor=_rgb(c, 0.55), edgecolor="k", label=f"Dice {lo:.1f}–{hi:.1f}") for lo, hi, c in DICE_BINS]
    legend.append(Patch(facecolor=_rgb(UNDEFINED_COLOR, 0.55), edgecolor="k", hatch="//", label="Dice undefined"))
    legend.append(Patch(facecolor=_rgb(CLASS_COLORS[1]), label=f"predicted {report['class']}"))
    legend.append(Patch(facecolor=NODATA_VEIL, edgecolor="k", label="no data or cloud"))
    ax.legend(handles=legend, loc="lower left", fontsize=7, framealpha=0.85)
    fig.tight_layout()
    return fig


def bar_figure(report: dict[str, Any]) -> Figure:
    """Dice by region as horizontal bars, with the micro (pooled) Dice as a line."""
    rows = report["regions"]
    fig = Figure(figsize=(8, 0.45 * len(rows) + 1.6), dpi=110)
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    values = [0.0 if r["dice_undefined"] else r["dice"] for r in rows]
    ax.barh(y, values, color=[_rgb(dice_color(r["dice"])) for r in rows], edgecolor="k", linewidth=0.5)
    for i, r in enumerate(rows):
        ax.text(values[i] + 0.01, i, fmt(r["dice"], ".3f"), va="center", fontsize=8)
    micro = report["overall"]["micro"]["dice"]
    if not math.isnan(micro):
        ax.axvline(micro, color="k", linestyle="--", linewidth=1, label=f"micro Dice {micro:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"{report['class']} Dice (clear pixels)")
    ax.set_title("Dice by region")
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def summary_lines(report: dict[str, Any]) -> list[str]:
    o = report["overall"]
    micro = o["micro"]
    return [
        (f"micro Dice (pooled counts): {fmt(micro['dice'], '.3f')}; IoU {fmt(micro['iou'], '.3f')}, "
         f"precision {fmt(micro['precision'], '.3f')}, recall {fmt(micro['recall'], '.3f')}"),
        f"macro Dice (mean over regions with a defined Dice): {fmt(o['macro']['dice'], '.3f')}",
        (f"predicted {report['class']} {fmt(o['pred_area_ha'], ',.1f')} ha, "
         f"reference {fmt(o['ref_area_ha'], ',.1f')} ha"),
    ]


def class_table(report: dict[str, Any]) -> list[list[str]]:
    """Overall scores per class (for multiclass maps)."""
    return [[c, fmt(v["micro"]["dice"], ".3f"), fmt(v["macro"]["dice"], ".3f"), fmt(v["micro"]["iou"], ".3f"),
             fmt(v["pred_area_ha"], ",.1f"), fmt(v["ref_area_ha"], ",.1f")]
            for c, v in report["overall"]["per_class"].items()]


CLASS_HEADER = ["class", "micro Dice", "macro Dice", "micro IoU", "predicted ha", "reference ha"]

NOTE = ("Counts are over valid pixels only: pixels that are no data or cloud in the prediction or the "
        "cloud mask, or unknown in the truth, are left out. A pixel belongs to a region when its centre "
        "lies inside it; overlapping regions each count it. An undefined Dice means the region has no "
        "wetland in either map on its clear pixels (or no clear pixel at all).")


def html_page(report: dict[str, Any], map_png: bytes, bar_png: bytes) -> str:
    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    def table(header: list[str], body: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    body = [[fmt(r[key], spec) for key, _, spec in COLUMNS] for r in report["regions"]]
    inputs = "".join(f"<li>{html.escape(k)}: <code>{html.escape(str(v))}</code></li>"
                     for k, v in report["inputs"].items() if v)
    classes = table(CLASS_HEADER, class_table(report)) if len(report["classes"]) > 2 else ""
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in summary_lines(report))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>wetmap regional report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }}
td:not(:first-child), th:not(:first-child) {{ text-align: right; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(report['class'].capitalize())} map: regional report</h1>
<ul>{summary}</ul>
{classes}
<h2>Map</h2>{img(map_png, "regions coloured by Dice over the prediction")}
<h2>Dice by region</h2>{img(bar_png, "bar chart of Dice by region")}
<h2>Regions</h2>{table([title for _, title, _ in COLUMNS], body)}
<p>{html.escape(NOTE)}</p>
<h2>Inputs</h2><ul>{inputs}</ul>
</body></html>
"""


def markdown_page(report: dict[str, Any]) -> str:
    def table(header: list[str], body: list[list[str]]) -> list[str]:
        clean = [[c.replace("|", "\\|") for c in r] for r in body]
        return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
                *("| " + " | ".join(r) + " |" for r in clean)]

    lines = [f"# {report['class'].capitalize()} map: regional report", ""]
    lines += [f"- {line}" for line in summary_lines(report)] + [""]
    if len(report["classes"]) > 2:
        lines += table(CLASS_HEADER, class_table(report)) + [""]
    lines += ["## Map", "", "![regions coloured by Dice over the prediction](map.png)", "",
              "## Dice by region", "", "![bar chart of Dice by region](dice_by_region.png)", "", "## Regions", ""]
    lines += table([title for _, title, _ in COLUMNS],
                   [[fmt(r[key], spec) for key, _, spec in COLUMNS] for r in report["regions"]])
    lines += ["", NOTE, "", "## Inputs", ""]
    lines += [f"- {k}: `{v}`" for k, v in report["inputs"].items() if v]
    return "\n".join(lines) + "\n"


def render_pages(report: dict[str, Any], tallies: list[RegionTally], pred: str | Path, grid: Grid) -> dict[str, bytes]:
    """map.png, dice_by_region.png, report.html and report.md, by name."""
    map_png = png_bytes(map_figure(report, tallies, pred, grid))
    bar_png = png_bytes(bar_figure(report))
    return {"map.png": map_png, "dice_by_region.png": bar_png,
            "report.html": html_page(report, map_png, bar_png).encode(),
            "report.md": markdown_page(report).encode()}
