"""Wetland area per region in each run, and hectares gained and lost between two runs.

Every figure comes from exact zonal counts (evaluate.tally, the pixels whose centre lies in the
region): a run's own wetland area counts its clear pixels only, with the clear fraction beside
it, so that a cloudy month reads as "less seen", not as a loss; gains and losses count only the
pixels clear in both runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wetmap.config import EvaluateConfig
from wetmap.evaluate.tally import RegionTally, tally
from wetmap.predict.classes import wetland_index


@dataclass(frozen=True)
class RegionArea:
    """One run's wetland in one region: hectares on clear pixels, and how much was clear."""

    name: str
    wetland_ha: float
    clear_fraction: float


@dataclass(frozen=True)
class RegionChange:
    """One region between two runs: each run's area, and the change on pixels clear in both."""

    name: str
    wetland_ha: float
    clear_fraction: float
    previous_wetland_ha: float | None = None
    previous_clear_fraction: float | None = None
    gained_ha: float | None = None
    lost_ha: float | None = None
    compared_fraction: float | None = None   # of the region's pixels: clear in both runs

    def row(self) -> dict[str, Any]:
        return asdict(self)


def _fraction(part: int, whole: int) -> float:
    return part / whole if whole else math.nan


def run_areas(classes_map: str | Path, regions: str | Path) -> list[RegionArea]:
    """Wetland hectares and clear fraction of one class map in each region (field `name`)."""
    tallies, _, classes = tally(classes_map, classes_map, regions, cfg=EvaluateConfig(region_field="name"))
    wet = wetland_index(classes)
    return [RegionArea(t.name, float(t.area[wet, wet]), _fraction(t.pixels - t.masked, t.pixels)) for t in tallies]


def _moved(t: RegionTally, wet: int) -> tuple[float, float]:
    """(gained, lost) hectares of a tally whose truth is the older run and prediction the newer."""
    others = [c for c in range(t.area.shape[0]) if c != wet]
    gained = float(sum(t.area[c, wet] for c in others))
    lost = float(sum(t.area[wet, c] for c in others))
    return gained, lost


def region_changes(current: str | Path, previous: str | Path | None, regions: str | Path) -> list[RegionChange]:
    """Per region: the current run's area, and with a previous run, its area and the change."""
    now = run_areas(current, regions)
    if previous is None:
        return [RegionChange(a.name, a.wetland_ha, a.clear_fraction) for a in now]
    before = run_areas(previous, regions)
    pairs, _, classes = tally(current, previous, regions, cfg=EvaluateConfig(region_field="name"))
    wet = wetland_index(classes)
    changes = []
    for area, old, pair in zip(now, before, pairs):
        gained, lost = _moved(pair, wet)
        changes.append(RegionChange(area.name, area.wetland_ha, area.clear_fraction, old.wetland_ha,
                                    old.clear_fraction, gained, lost,
                                    _fraction(int(pair.confusion.sum()), pair.pixels)))
    return changes
