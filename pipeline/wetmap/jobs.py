"""Scheduled regional mapping jobs: predict -> mosaic clipped to the region -> evaluate, safely.

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
import errno
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from wetmap import __version__, config
from wetmap.config import JobConfig
from wetmap.errors import JobBusy, WetmapError, WetmapWarning
from wetmap.io.outputs import commit_dir, point_link
from wetmap.io.paths import is_remote
from wetmap.io.storage import Remote, join, output_url, staging_root
from wetmap.io.vector import read_polygons, region_names
from wetmap.runtime import json_safe

MANIFEST = "manifest.json"
log = logging.getLogger("wetmap.jobs")


@dataclass
class JobResult:
    """The outcome of `wetmap run`: done or up to date, where the run is, and its manifest."""

    status: str          # "done" or "up to date"
    run_dir: Path | str  # a str (URL) when OUTPUT_ROOT is one
    manifest: dict[str, Any]


class Place:
    """Where a job's runs are kept: a local folder, or a URL with a local staging folder.

    `local` holds the lock, the work folder of the run in progress and the logs either way."""

    def __init__(self, output_root: str, name: str) -> None:
        self.url = output_url(output_root)
        if self.url is None:
            self.local = Path(output_root) / name
            self.remote = None
        else:
            self.url = join(self.url, name)
            digest = hashlib.sha256(self.url.encode()).hexdigest()[:12]
            self.local = staging_root() / "wetmap-jobs" / f"{name}-{digest}"
            self.remote = Remote(self.url)

    def run_dir(self, name: str) -> Path | str:
        return self.local / name if self.url is None else join(self.url, name)

    def latest_manifest(self) -> tuple[str, dict[str, Any]] | None:
        """The latest complete run's name and manifest, None when there is none."""
        if self.remote is None:
            latest = self.local / "latest"
            try:
                return latest.resolve().name, json.loads((latest / MANIFEST).read_text())
            except (OSError, ValueError):
                return None
        name = (self.remote.read_text("latest") or "").strip()
        text = self.remote.read_text(name, MANIFEST) if name else None
        try:
            return (name, json.loads(text)) if text else None
        except ValueError:
            return None

    def run_name(self) -> str:
        """Today's date; a second changed run on the same day gets .2, .3, ..."""
        taken = set(self.remote.names()) if self.remote is not None else \
            {p.name for p in self.local.iterdir()} if self.local.is_dir() else set()
        base = dt.date.today().isoformat()
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}.{n}"
        return name

    def commit(self, work: Path) -> str:
        """Put the finished run in place under a new name, then point `latest` at it."""
        name = self.run_name()
        if self.remote is None:
            commit_dir(work, self.local / name, overwrite=False)
            point_link(self.local / "latest", name)
        else:
            self.remote.put_folder(work, name, last=MANIFEST)
            self.remote.put_text(name + "\n", "latest")
            shutil.rmtree(work, ignore_errors=True)
        return name

    def keep_log(self, log_path: Path) -> None:
        """This invocation's log, moved up beside the remote runs (a warning if it cannot go up,
        so that it never hides the run's own outcome)."""
        if self.remote is not None:
            try:
                self.remote.put(log_path, "logs", log_path.name)
            except WetmapError as exc:
                warnings.warn(f"the log stays in {log_path}: {exc}", WetmapWarning, stacklevel=2)
            else:
                log_path.unlink()


@contextlib.contextmanager
def job_lock(job_dir: Path, wait: bool) -> Iterator[None]:
    """An exclusive flock on job_dir/.lock; the kernel drops it when the holder dies."""
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise JobBusy(f"job is already running ({holder}); try again later or pass --wait") from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {dt.datetime.now().isoformat(timespec='seconds')}")
        fh.flush()
        try:
            yield
        finally:
            fh.truncate(0)
            fcntl.flock(fh, fcntl.LOCK_UN)


def resolve_scenes(cfg: JobConfig, source: Path) -> list[tuple[str, str | None]]:
    """(scene, cloud mask) pairs from the paths / globs of the job, sorted, each checked to exist.

    A scene is any form wetmap reads (a raster, a SAFE, a Landsat folder, a STAC item, remote
    paths); without `scenes.clouds` (or with "auto") each scene brings its own mask, or the cloud
    detector makes one; "detect" and "none" are passed on as they are.
    """
    images: list[str] = []
    for pattern in cfg.scenes.images:
        if is_remote(pattern):
            images.append(pattern)
            continue
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not found:
            raise WetmapError(f"no scene matches '{pattern}'", source)
        images += found
    pairs = []
    for image in images:
        if not is_remote(image) and not Path(image).exists():
            raise WetmapError("scene not found", image)
        clouds = cfg.scenes.clouds if cfg.scenes.clouds in ("auto", "detect", "none") else None
        if cfg.scenes.clouds and clouds is None:
            local = Path(image)
            clouds = str(local.with_name(cfg.scenes.clouds.format(stem=local.stem, name=local.name)))
            if not is_remote(clouds) and not Path(clouds).exists():
                raise WetmapError(f"cloud mask for {local.name} not found", clouds)
        pairs.append((image, clouds))
    return pairs


def region_frame(cfg: JobConfig, source: Path) -> gpd.GeoDataFrame:
    """The job's region as polygons (the chosen features of a file, or the box), with names."""
    spec = cfg.region
    if spec.bounds is not None:
        return gpd.GeoDataFrame({"name": [cfg.name]}, geometry=[shapely.box(*spec.bounds)], crs=spec.crs)
    if spec.file is None:
        raise WetmapError("region: give a file or bounds", source)
    gdf = read_polygons(spec.file)
    names = region_names(gdf, spec.field, spec.file)
    gdf = gdf.assign(name=names)[["name", "geometry"]]
    if spec.values is not None:
        gdf = gdf[gdf["name"].isin(spec.values)]
        if gdf.empty:
            raise WetmapError(f"no region named {', '.join(spec.values)}", spec.file)
    return gdf.reset_index(drop=True)


def file_fingerprint(path: Path, checksum: bool = False) -> dict[str, Any]:
    if not path.exists():
        raise WetmapError("file not found", path)
    stat = path.stat()
    entry = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if checksum:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        entry["sha256"] = digest.hexdigest()
    return entry


def scene_fingerprint(path: str) -> dict[str, Any]:
    """A scene's fingerprint: a file's size and time; a product folder's, every file's in it; a
    remote path's, the path (object stores are versioned by their keys)."""
    if is_remote(path):
        return {"path": path}
    local = Path(path)
    if not local.is_dir():
        return file_fingerprint(local)
    listing = sorted((str(p.relative_to(local)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in local.rglob("*") if p.is_file())
    return {"path": path, "files": len(listing),
            "listing_sha256": hashlib.sha256(json.dumps(listing).encode()).hexdigest()}


def fingerprint(cfg: JobConfig, scenes: list[tuple[str, str | None]]) -> dict[str, Any]:
    """What a run's results depend on: config, wetmap version, model (hashed) and every input."""
    inputs = [scene_fingerprint(p) for pair in scenes for p in pair if p is not None]
    for extra in (cfg.reference, cfg.region.file):
        if extra:
            inputs.append(file_fingerprint(Path(extra)))
    config_json = json.dumps(config.dump(cfg), sort_keys=True)
    return {"config_sha256": hashlib.sha256(config_json.encode()).hexdigest(), "wetmap": __version__,
            "model": file_fingerprint(Path(cfg.model), checksum=True), "inputs": inputs}


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


def run_job(config_path: str | Path, wait: bool = False, force: bool = False) -> JobResult:
    """Run the job in `config_path` unless its latest results are up to date (or `force`).

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
                    return _run_locked(cfg, config_path, place, force, log_path)
                except Exception:
                    log.exception("run failed")
                    raise
        finally:
            place.keep_log(log_path)


def _run_locked(cfg: JobConfig, config_path: Path, place: Place, force: bool, log_path: Path) -> JobResult:
    for stale in place.local.glob(".run-*"):      # left by a run that was killed
        log.info("removing %s, left by an interrupted run", stale.name)
        shutil.rmtree(stale, ignore_errors=True)
    scenes = resolve_scenes(cfg, config_path)
    region = region_frame(cfg, config_path)
    prints = fingerprint(cfg, scenes)
    previous = place.latest_manifest()
    if not force and previous is not None and previous[1].get("fingerprint") == prints:
        log.info("up to date: inputs, config and model unchanged since %s", previous[1].get("finished"))
        return JobResult("up to date", place.run_dir(previous[0]), previous[1])
    work = place.local / f".run-{uuid.uuid4().hex[:8]}"
    work.mkdir()
    manifest = _produce(cfg, scenes, region, prints, work)
    shutil.copyfile(log_path, work / "run.log")
    name = place.commit(work)
    log.info("results in %s; latest -> %s", place.run_dir(name), name)
    return JobResult("done", place.run_dir(name), manifest)


def _produce(cfg: JobConfig, scenes: list[tuple[str, str | None]], region: gpd.GeoDataFrame,
             prints: dict[str, Any], work: Path) -> dict[str, Any]:
    """The job's steps, into `work`; the manifest is the last file written."""
    from wetmap.evaluate.report import evaluate
    from wetmap.predict.mosaic import predict_mosaic

    started = dt.datetime.now(dt.UTC)
    timings: dict[str, float] = {}
    log.info("job %s: %d scene(s), region %s", cfg.name, len(scenes), ", ".join(region["name"]))
    region.to_file(work / "region.gpkg", driver="GPKG", engine="pyogrio")
    t = time.perf_counter()
    result = predict_mosaic(cfg.model, [s for s, _ in scenes], work / "wetlands.tif", clouds=[c for _, c in scenes],
                            cfg=cfg.predict, probabilities=True, vectorize=cfg.vectorize,
                            min_area_ha=cfg.min_area_ha, region=region.geometry, band_names=cfg.scenes.band_names)
    timings["predict"] = time.perf_counter() - t
    log.info("predicted %d pixels in %.1f s: %.1f%% clear, %.1f%% of clear pixels wetland", result.pixels,
             timings["predict"], 100 * result.valid_fraction, 100 * result.wetland_fraction)
    metrics: dict[str, Any] = {"valid_fraction": result.valid_fraction, "wetland_fraction": result.wetland_fraction}
    if cfg.reference:
        t = time.perf_counter()
        report = evaluate(work / "wetlands.tif", cfg.reference, work / "region.gpkg", work / "report",
                          cfg=cfg.evaluate.model_copy(update={"region_field": "name"}))
        timings["evaluate"] = time.perf_counter() - t
        metrics["dice_micro"] = report.micro.dice
        metrics["dice_macro"] = report.macro.dice
        log.info("evaluated in %.1f s: micro Dice %.3f", timings["evaluate"], metrics["dice_micro"])
    from wetmap.runtime import versions

    manifest = {
        "job": cfg.name, "status": "complete", "fingerprint": prints,
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "timings_s": timings, "metrics": metrics, "versions": versions(),
        "classes": result.class_names,
        "scenes": result.scenes_read,
        "outputs": sorted([*(p.name for p in work.iterdir()), MANIFEST, "run.log"]),
        "config": config.dump(cfg),
    }
    (work / MANIFEST).write_text(json.dumps(json_safe(manifest), indent=2, default=str, allow_nan=False))
    log.info("run complete")
    return manifest
