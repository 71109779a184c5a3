"""`wetmap run`: scheduled regional mapping jobs: predict -> mosaic clipped to the region -> evaluate, safely.

A run works in a hidden folder beside the results and is renamed into
OUTPUT_ROOT/<name>/<date>/ only when everything, manifest included, is written; `latest` then
points at it. So a run killed at any moment (even SIGKILL) leaves the previous results and
`latest` intact, and the next run removes its leftovers and starts clean. A file lock (released
by the kernel when a process dies) keeps two runs of one job apart. The manifest records what a
run was made from; a run whose inputs, config, model and wetmap version match the latest one's
does nothing ("up to date").

OUTPUT_ROOT may be a URL (s3://..., any fsspec URL): the run is made in a local staging folder
(io.storage), uploaded file by file with the manifest last, and only then is `latest`, a small
object holding the run's name, written. A reader that follows `latest` finds a complete run; a
killed upload leaves at most an unlisted, manifest-less folder. The lock is then a local one:
across machines, let the scheduler start one run of a job at a time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd

from wetmap import config
from wetmap.config import JobConfig
from wetmap.errors import WetmapError
from wetmap.jobs.catalog import CATALOG, ITEM, catalog_json, item_json, run_item
from wetmap.jobs.history import run_changes
from wetmap.jobs.inputs import fingerprint, region_frame, resolve_scenes
from wetmap.jobs.place import MANIFEST, Place, job_lock
from wetmap.runtime import json_safe

log = logging.getLogger("wetmap.jobs")
MAP = "wetlands.tif"   # every run's class map


@dataclass
class JobResult:
    """The outcome of `wetmap run`: done or up to date, where the run is, and its manifest."""

    status: str          # "done" or "up to date"
    run_dir: Path | str  # a str (URL) when OUTPUT_ROOT is one
    manifest: dict[str, Any]


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Log this run's steps to `path` (and to whatever handlers the caller set up)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("wetmap")
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()


def run_job(config_path: str | Path, wait: bool = False, force: bool = False,
            since: dt.date | None = None) -> JobResult:
    """Run the job in `config_path` unless its latest results are up to date (or `force`), and
    compare its map with the latest complete run's (or, with `since`, the newest run of that day
    or before).

    Every invocation logs to OUTPUT_ROOT/<name>/logs/<time>.log (failed runs included); a
    completed run keeps a copy as run.log.
    """
    config_path = Path(config_path)
    cfg = config.load(JobConfig, config_path)
    place = Place(cfg.output_root, cfg.name)
    with job_lock(place.local, wait):
        stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
        log_path = place.local / "logs" / f"{stamp}-{os.getpid()}.log"
        log_path.parent.mkdir(exist_ok=True)
        try:
            with run_log(log_path):
                try:
                    return _run_locked(cfg, config_path, place, force, log_path, since)
                except Exception:
                    log.exception("run failed")
                    raise
        finally:
            place.keep_log(log_path)


def _run_locked(cfg: JobConfig, config_path: Path, place: Place, force: bool, log_path: Path,
                since: dt.date | None) -> JobResult:
    for stale in place.local.glob(".run-*"):      # left by a run that was killed
        log.info("removing %s, left by an interrupted run", stale.name)
        shutil.rmtree(stale, ignore_errors=True)
    scenes = resolve_scenes(cfg, config_path)
    region = region_frame(cfg, config_path)
    prints = fingerprint(cfg, scenes)
    previous = place.latest_manifest()
    baseline = place.baseline(since)
    compared = previous is not None and baseline in (previous[0], previous[1].get("change", {}).get("previous"))
    if not force and previous is not None and previous[1].get("fingerprint") == prints and compared:
        log.info("up to date: inputs, config and model unchanged since %s", previous[1].get("finished"))
        return JobResult("up to date", place.run_dir(previous[0]), previous[1])
    work = place.local / f".run-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    older = (baseline, place.run_file(baseline, MAP)) if baseline is not None else None
    series = [(run, change["regions"]) for run, change in run_changes(place)[0]]
    name = place.run_name()   # under the lock: no other run takes it
    manifest = _produce(cfg, scenes, region, prints, work, older, series, name)
    shutil.copyfile(log_path, work / "run.log")
    place.commit(work, name)
    place.put_text(catalog_json(cfg.name, [r for r in place.runs() if place.read_text(r, ITEM) is not None]),
                   CATALOG)
    log.info("results in %s; latest -> %s; %s lists the runs", place.run_dir(name), name, CATALOG)
    return JobResult("done", place.run_dir(name), manifest)


def _produce(cfg: JobConfig, scenes: list[tuple[str, str | None]], region: gpd.GeoDataFrame,
             prints: dict[str, Any], work: Path, older: tuple[str, str] | None,
             series: list[tuple[str, list[dict[str, Any]]]], name: str) -> dict[str, Any]:
    """The job's steps, into `work` (the run `name`), the map compared with the `older` run's
    (name, map) and charted after the earlier runs' `series`; its STAC item, then the manifest,
    are the last files written."""
    from wetmap.evaluate.report import evaluate
    from wetmap.predict.mosaic import predict_mosaic

    started = dt.datetime.now(dt.UTC)
    timings: dict[str, float] = {}
    log.info("job %s: %d scene(s), region %s", cfg.name, len(scenes), ", ".join(region["name"]))
    region.to_file(work / "region.gpkg", driver="GPKG", engine="pyogrio")
    t = time.perf_counter()
    result = predict_mosaic(cfg.model, [s for s, _ in scenes], work / MAP, clouds=[c for _, c in scenes],
                            cfg=cfg.predict, probabilities=True, vectorize=cfg.vectorize,
                            min_area_ha=cfg.min_area_ha, region=region.geometry, band_names=cfg.scenes.band_names)
    timings["predict"] = time.perf_counter() - t
    log.info("predicted %d pixels in %.1f s: %.1f%% clear, %.1f%% of clear pixels wetland", result.pixels,
             timings["predict"], 100 * result.valid_fraction, 100 * result.wetland_fraction)
    metrics: dict[str, Any] = {"valid_fraction": result.valid_fraction, "wetland_fraction": result.wetland_fraction}
    if cfg.reference:
        t = time.perf_counter()
        report = evaluate(work / MAP, cfg.reference, work / "region.gpkg", work / "report",
                          cfg=cfg.evaluate.model_copy(update={"region_field": "name"}))
        timings["evaluate"] = time.perf_counter() - t
        metrics["dice_micro"] = report.micro.dice
        metrics["dice_macro"] = report.macro.dice
        log.info("evaluated in %.1f s: micro Dice %.3f", timings["evaluate"], metrics["dice_micro"])
    t = time.perf_counter()
    change = _compare(work, older, cfg.min_area_ha, series, name)
    timings["change"] = time.perf_counter() - t
    from wetmap.runtime import versions

    manifest: dict[str, Any] = {
        "job": cfg.name, "status": "complete", "fingerprint": prints,
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "timings_s": timings, "metrics": metrics, "change": change, "versions": versions(),
        "classes": result.class_names,
        "scenes": result.scenes_read,
        "outputs": sorted([*(p.name for p in work.iterdir()), ITEM, MANIFEST, "run.log"]),
        "config": config.dump(cfg),
    }
    properties = {"title": f"{cfg.name} {name}", "wetmap:job": cfg.name, "wetmap:classes": result.class_names,
                  "wetmap:model_sha256": prints["model"]["sha256"], "wetmap:version": prints["wetmap"],
                  "wetmap:scenes": [s for s, _ in scenes], "wetmap:previous_run": change["previous"],
                  "wetmap:clear_fraction": result.valid_fraction}
    (work / ITEM).write_text(item_json(run_item(name, work, json_safe(properties), started.isoformat(timespec="seconds"))))
    (work / MANIFEST).write_text(json.dumps(json_safe(manifest), indent=2, default=str, allow_nan=False))
    log.info("run complete")
    return manifest


def _compare(work: Path, older: tuple[str, str] | None, min_area_ha: float,
             series: list[tuple[str, list[dict[str, Any]]]], name_now: str) -> dict[str, Any]:
    """The run's change against the older run (its manifest's `change`); a first run, or an older
    run of other classes, writes its own areas only and says why there is no comparison."""
    from wetmap.change import compare_runs
    from wetmap.change.raster import check_same_classes

    name, path = older if older is not None else (None, None)
    skipped = None if older is not None else "the job's first run"
    if path is not None:
        try:
            check_same_classes(path, work / MAP)
        except WetmapError as exc:
            log.warning("not compared with %s: %s", name, exc)
            name, path, skipped = None, None, f"run {name}: {exc}"
    result = compare_runs(work / MAP, path, name, work / "region.gpkg", work, min_area_ha, skipped, series,
                          work / "report" / "report.html", name_now)
    totals = result.totals()
    if name is not None:
        log.info("since %s: %.1f ha gained, %.1f ha lost (on pixels clear in both runs)", name,
                 totals["gained_ha"] or 0.0, totals["lost_ha"] or 0.0)
    return {"previous": name, **({"not_compared": skipped} if skipped else {}), **totals}
