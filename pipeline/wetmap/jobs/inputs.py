"""What a job reads (its scenes, its region) and the fingerprint of all of it."""

from __future__ import annotations

import glob
import hashlib
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import shapely

from wetmap import __version__, config
from wetmap.config import JobConfig
from wetmap.errors import WetmapError
from wetmap.io.paths import is_remote
from wetmap.io.vector import read_polygons, region_names

MASK_WORDS = ("auto", "detect", "none")   # what `scenes.clouds` may say instead of a mask file


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
        clouds = cfg.scenes.clouds if cfg.scenes.clouds in MASK_WORDS else None
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
    # a mask word (auto, detect, none) is no file: the config's hash holds it
    inputs = [scene_fingerprint(p) for pair in scenes for p in pair if p is not None and p not in MASK_WORDS]
    for extra in (cfg.reference, cfg.region.file):
        if extra:
            inputs.append(file_fingerprint(Path(extra)))
    config_json = json.dumps(config.dump(cfg), sort_keys=True)
    return {"config_sha256": hashlib.sha256(config_json.encode()).hexdigest(), "wetmap": __version__,
            "model": file_fingerprint(Path(cfg.model), checksum=True), "inputs": inputs}
