"""A run compared with an earlier one: the change raster, its polygons, the per-region table
and the pages (change.html; a section of the run's report.html when it has one).

Written into the run's folder as one `OutputSet` (change.json last), so a run folder holds either
a complete comparison or none. The first run of a job has nothing to compare with: it still
writes change.csv / change.json with its own areas, which start the job's time series.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd

from wetmap.change.pages import change_page, change_section, render_figures, with_section
from wetmap.change.raster import CHANGE_COLORS, CHANGE_NAMES, GAINED, LOST, write_change_raster
from wetmap.change.regions import RegionChange, region_changes
from wetmap.io.areas import PixelArea
from wetmap.io.outputs import OutputSet
from wetmap.predict.vectorize import vectorize_classes
from wetmap.runtime import json_safe

FIELDS = ["name", "wetland_ha", "clear_fraction", "previous_wetland_ha", "previous_clear_fraction", "gained_ha",
          "lost_ha", "compared_fraction"]
CHANGE_FILES = ("change.tif", "change.qml", "change.gpkg", "change_map.png")
TABLE_FILES = ("change.csv", "wetland_by_run.png", "change.html", "change.json")


@dataclass(frozen=True)
class ChangeResult:
    """The per-region figures `compare_runs` wrote, and the run they compare with (None: none)."""

    previous: str | None
    regions: list[RegionChange]

    def totals(self) -> dict[str, float | None]:
        """Hectares over all regions (None where there was nothing to compare with)."""
        def total(key: str) -> float | None:
            values = [getattr(r, key) for r in self.regions]
            return None if any(v is None for v in values) else float(sum(values))

        return {key: total(key) for key in ("wetland_ha", "previous_wetland_ha", "gained_ha", "lost_ha")}


def _write_csv(path: Path, rows: list[RegionChange]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.row().items()})


def compare_runs(current: Path, previous: str | Path | None, previous_name: str | None, regions: Path,
                 out: Path, min_area_ha: float = 0.0, not_compared: str | None = None,
                 series: Sequence[tuple[str, list[dict[str, Any]]]] = (), report: Path | None = None,
                 run: str = "this run") -> ChangeResult:
    """Compare the class map `current` with `previous` (another run's, any path or URL GDAL
    reads; None for a job's first run, with the reason in `not_compared`) over `regions`,
    writing into the folder `out`. `series`: the earlier runs' (name, change.json regions), for
    the chart of wetland over the runs, where this one is `run`; `report`: the run's report.html,
    which gets the section."""
    names = (*(CHANGE_FILES if previous is not None else ()), *TABLE_FILES)
    with OutputSet([out / name for name in names], overwrite=False) as outputs:
        info: dict[str, Any] = {"previous": previous_name, "current_map": current.name,
                                "previous_map": str(previous) if previous is not None else None,
                                **({"not_compared": not_compared} if not_compared else {})}
        if previous is not None:
            grid, classes = write_change_raster(outputs, previous, current, out / "change.tif",
                                       {"PREVIOUS_RUN": previous_name or str(previous)})
            tif, gpkg = outputs[out / "change.tif"], outputs[out / "change.gpkg"]
            for value in (GAINED, LOST):
                vectorize_classes(tif, gpkg, value, CHANGE_NAMES[value], min_area_ha, CHANGE_COLORS[value])
            info.update(classes=classes, area_method=PixelArea(grid).method)
        rows = region_changes(current, previous, regions)
        result = ChangeResult(previous_name, rows)
        _write_csv(outputs[out / "change.csv"], rows)
        info.update(regions=[r.row() for r in rows], totals=result.totals())
        frame = gpd.read_file(regions, engine="pyogrio")
        figures = render_figures(outputs[out / "change.tif"] if previous is not None else None, frame,
                                 [*series, (run, info["regions"])])
        for name, data in figures.items():
            outputs[out / name].write_bytes(data)
        section = change_section(info, figures)
        outputs[out / "change.html"].write_text(change_page(section))
        if report is not None and report.exists():
            with OutputSet([report], overwrite=True) as amended:
                amended[report].write_text(with_section(report.read_text(), section))
        outputs[out / "change.json"].write_text(json.dumps(json_safe(info), indent=2, allow_nan=False))
    return result
