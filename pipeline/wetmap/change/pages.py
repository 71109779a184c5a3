"""The readable side of a comparison: a map of gains and losses, a chart of wetland area per region
over every run of the job, and the per-region table, as an HTML section.

The section stands alone as change.html and is added to the run's report.html when the run has
one. Figures use matplotlib's object API (never pyplot) and read the change COG decimated, from
its overviews, as the report's own map does.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from wetmap.change.raster import CHANGE_COLORS, CHANGE_NAMES, GAINED, LOST, STABLE_WETLAND
from wetmap.evaluate.pages import MAP_PIXELS, NODATA_VEIL, fmt, png_bytes
from wetmap.runtime import gdal_env

MOSTLY_CLOUDY = 0.5   # a run that saw less of a region than this is drawn hollow in the chart


def _rgba(code: int, alpha: float = 1.0) -> tuple[float, float, float, float]:
    r, g, b, _ = CHANGE_COLORS[code]
    return (r / 255, g / 255, b / 255, alpha)


def change_map(change_tif: str | Path, regions: gpd.GeoDataFrame) -> Figure:
    """Gains and losses over the regions' outlines; stable wetland faint, unknown a grey veil."""
    with gdal_env(), rasterio.open(change_tif) as src:
        scale = max(1.0, max(src.width, src.height) / MAP_PIXELS)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        codes = src.read(1, out_shape=shape, resampling=rasterio.enums.Resampling.nearest)
        b, crs = src.bounds, src.crs
    lut = np.zeros((256, 4), np.float32)   # stable other: transparent
    lut[STABLE_WETLAND] = _rgba(STABLE_WETLAND, 0.6)
    lut[GAINED], lut[LOST] = _rgba(GAINED), _rgba(LOST)
    lut[255] = NODATA_VEIL
    fig = Figure(figsize=(9, 8), dpi=110)
    ax = fig.add_subplot()
    ax.imshow(lut[codes], extent=(b.left, b.right, b.bottom, b.top), interpolation="nearest")
    regions.to_crs(crs).boundary.plot(ax=ax, color=(0.1, 0.1, 0.1), linewidth=1.0)
    ax.set_xlim(b.left, b.right)
    ax.set_ylim(b.bottom, b.top)
    ax.set_aspect("equal")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.set_title("wetland gained and lost (pixels clear in both runs)")
    legend = [Patch(facecolor=_rgba(c, 0.6 if c == STABLE_WETLAND else 1.0), label=CHANGE_NAMES[c])
              for c in (STABLE_WETLAND, GAINED, LOST)]
    legend.append(Patch(facecolor=NODATA_VEIL, edgecolor="k", label="unknown (cloud or no data in either run)"))
    ax.legend(handles=legend, loc="lower left", fontsize=7, framealpha=0.85)
    fig.tight_layout()
    return fig


def area_chart(series: Sequence[tuple[str, list[dict[str, Any]]]]) -> Figure:
    """Wetland hectares per region over the runs (run name, that run's change.json regions);
    a run that saw less than half of a region is drawn hollow: its area is a lower bound."""
    runs = [name for name, _ in series]
    regions = list(dict.fromkeys(r["name"] for _, rows in series for r in rows))
    fig = Figure(figsize=(9, 4.8), dpi=110)
    ax = fig.add_subplot()
    for region in regions:
        points = [(i, r["wetland_ha"], r["clear_fraction"]) for i, (_, rows) in enumerate(series)
                  for r in rows if r["name"] == region and r["wetland_ha"] is not None]
        if not points:
            continue
        x, y, clear = zip(*points)
        line, = ax.plot(x, y, marker="o", label=region)
        hollow = [i for i, c in enumerate(clear) if c is None or math.isnan(c) or c < MOSTLY_CLOUDY]
        ax.plot([x[i] for i in hollow], [y[i] for i in hollow], "o", markerfacecolor="white",
                markeredgecolor=line.get_color(), linestyle="none")
    ax.set_xticks(range(len(runs)), runs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("wetland ha (clear pixels)")
    ax.set_title(f"wetland per region over {len(runs)} run(s); hollow: less than {MOSTLY_CLOUDY:.0%} clear")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


COLUMNS = [("name", "region", ""), ("wetland_ha", "wetland ha", ",.1f"), ("clear_fraction", "clear", ".0%"),
           ("previous_wetland_ha", "before: ha", ",.1f"), ("previous_clear_fraction", "before: clear", ".0%"),
           ("gained_ha", "gained ha", ",.1f"), ("lost_ha", "lost ha", ",.1f"),
           ("compared_fraction", "compared", ".0%")]


def change_section(change: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The comparison as an HTML section: a summary line, the figures, the per-region table."""
    def img(data: bytes, alt: str) -> str:
        return f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in COLUMNS)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r[key], spec) if spec else str(r[key]))}</td>"
                                    for key, _, spec in COLUMNS) + "</tr>" for r in change["regions"])
    totals = change["totals"]
    if change.get("previous"):
        summary = (f"Since run {html.escape(change['previous'])}: {fmt(totals['gained_ha'], ',.1f')} ha of wetland "
                   f"gained, {fmt(totals['lost_ha'], ',.1f')} ha lost, on pixels clear in both runs.")
    else:
        summary = f"Not compared: {html.escape(change.get('not_compared') or 'no earlier run')}."
    parts = [f"<h2>Change</h2><p>{summary}</p>"]
    if "change_map.png" in figures:
        parts.append(img(figures["change_map.png"], "wetland gained and lost"))
    parts.append(img(figures["wetland_by_run.png"], "wetland per region over the runs"))
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    parts.append("<p>Each run's wetland is measured on its own clear pixels, with the clear fraction beside "
                 "it; gains and losses count only pixels clear in both runs: change is never claimed "
                 "through a cloud.</p>")
    return "\n".join(parts)


def change_page(section: str) -> str:
    """change.html: the section as a page of its own."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>wetmap: wetland change</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }} th, td {{ padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; }}
td:not(:first-child), th:not(:first-child) {{ text-align: right; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Wetland change</h1>
{section}
</body></html>
"""


def with_section(report_html: str, section: str) -> str:
    """The run's report.html with the change section added before its inputs."""
    marker = "<h2>Inputs</h2>"
    return report_html.replace(marker, section + "\n" + marker, 1) if marker in report_html else \
        report_html.replace("</body>", section + "\n</body>", 1)


def render_figures(change_tif: Path | None, regions: gpd.GeoDataFrame,
                   series: Sequence[tuple[str, list[dict[str, Any]]]]) -> dict[str, bytes]:
    """change_map.png (with a comparison) and wetland_by_run.png, by name."""
    figures = {"wetland_by_run.png": png_bytes(area_chart(series))}
    if change_tif is not None:
        figures["change_map.png"] = png_bytes(change_map(change_tif, regions))
    return figures
