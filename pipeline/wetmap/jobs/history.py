"""`wetmap history`: a job's wetland area per region over all its complete runs.

Read from each run's change.json (written by every run since wetmap kept them), so the series
costs one small read per run, locally or in object storage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wetmap import config
from wetmap.config import JobConfig
from wetmap.errors import WetmapError
from wetmap.jobs.place import Place

CHANGE_JSON = "change.json"


@dataclass(frozen=True)
class HistoryRow:
    """One region in one run: its wetland (clear pixels), how much was clear, and the change since
    the run it was compared with (None where it was not compared)."""

    run: str
    region: str
    wetland_ha: float | None
    clear_fraction: float | None
    gained_ha: float | None
    lost_ha: float | None
    previous: str | None

    FIELDS = ("run", "region", "wetland_ha", "clear_fraction", "gained_ha", "lost_ha", "previous")


def run_changes(place: Place) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(run, its change.json) for every complete run that has one, oldest first, and the runs
    that have none (made before wetmap wrote it)."""
    found: list[tuple[str, dict[str, Any]]] = []
    without: list[str] = []
    for run in place.runs():
        text = place.read_text(run, CHANGE_JSON)
        if text is None:
            without.append(run)
            continue
        try:
            found.append((run, json.loads(text)))
        except ValueError:
            raise WetmapError("not valid JSON", place.run_file(run, CHANGE_JSON)) from None
    return found, without


def job_history(config_path: str | Path) -> tuple[list[HistoryRow], list[str]]:
    """The rows of every complete run of the job, oldest first, and the runs that hold no
    change.json."""
    cfg = config.load(JobConfig, Path(config_path))
    found, without = run_changes(Place(cfg.output_root, cfg.name))
    rows: list[HistoryRow] = []
    for run, change in found:
        for region in change["regions"]:
            rows.append(HistoryRow(run, region["name"], region.get("wetland_ha"), region.get("clear_fraction"),
                                   region.get("gained_ha"), region.get("lost_ha"), change.get("previous")))
    return rows, without
