"""A cloud mask for scenes that bring none: the detector run over the scene, once, into a raster.

The detector sees the scene at about `cloud.detect_resolution` (30 m: what ukis-csmask was trained
at, and a ninth of Sentinel-2's 10 m pixels to compute): each block of f x f pixels is averaged
over its pixels with data. It runs on overlapping tiles of that coarse grid, tile row by tile row,
their probabilities blended as prediction blends its own (`io.blend.StripAccumulator`), so memory
holds one strip of tiles however large the scene. Classes are written back on the scene's own grid
as a "cloud classes" raster (`cloud.CLASS_NAMES`), which every stage then reads like any other mask
file (dilated by `cloud.dilate`, aligned to its grid).

The raster is kept in a cache (`$WETMAP_CACHE`, else `~/.cache/wetmap`) under a key made of the
scene's band files (path, size, modification time), the level, the detector and its settings, so
tile, train, predict and a scheduled rerun detect each scene once. It is written under a temporary
name and renamed when complete, so an interrupted run leaves nothing under the final name.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
from numba import njit
from rasterio.windows import Window

from wetmap.config import CloudConfig
from wetmap.errors import WetmapError
from wetmap.io.blend import StripAccumulator
from wetmap.io.cog import open_strip_writer, to_cog, write_strip
from wetmap.io.outputs import OutputSet
from wetmap.io.paths import is_remote
from wetmap.io.raster import Grid
from wetmap.io.windows import TileGrid
from wetmap.masks.cloud import CLASS_COLORS, CLASS_NAMES, NO_DATA
from wetmap.masks.detector import CsmaskDetector, Detector, csmask_bands
from wetmap.progress import tracker
from wetmap.scenes.reader import SceneReader, scene_grid
from wetmap.scenes.spec import CLASSES_DESCRIPTION, MaskSource, SceneSpec

# Pixels of the detector's tiles that the blend leaves out at every overlapped side.
BLEND_CROP = 4


def pixel_metres(grid: Grid) -> float:
    """The grid's pixel width in metres (at the grid's centre for a geographic CRS)."""
    if grid.crs.is_geographic:
        west, south, east, north = grid.bounds
        return grid.res * 111_320.0 * math.cos(math.radians((south + north) / 2))
    return grid.res * grid.crs.linear_units_factor[1]


def coarsening(grid: Grid, resolution: float) -> int:
    """How many scene pixels, along each axis, make one detector pixel (1: the scene's own)."""
    return max(1, round(resolution / pixel_metres(grid)))


def block_mean(bands: np.ndarray, valid: np.ndarray, f: int) -> tuple[np.ndarray, np.ndarray]:
    """(C, h*f, w*f) -> (C, h, w): the mean of each f x f block over its pixels with data.

    Compiled: numpy's reductions over 3 x 3 blocks took longer than reading the pixels."""
    c, hh, ww = bands.shape
    mean = np.zeros((c, hh // f, ww // f), np.float32)
    count = np.zeros((hh // f, ww // f), np.int32)
    _block_sums(np.ascontiguousarray(bands, np.float32), np.ascontiguousarray(valid), f, mean, count)
    return mean, count > 0


@njit(nogil=True, cache=True)
def _block_sums(bands: np.ndarray, valid: np.ndarray, f: int, mean: np.ndarray, count: np.ndarray) -> None:
    c, h, w = mean.shape
    for y in range(h):
        for x in range(w):
            n = 0
            for dy in range(f):
                for dx in range(f):
                    if valid[y * f + dy, x * f + dx]:
                        n += 1
                        for k in range(c):
                            mean[k, y, x] += bands[k, y * f + dy, x * f + dx]
            count[y, x] = n
            if n:
                for k in range(c):
                    mean[k, y, x] /= n


def scene_level(spec: SceneSpec, cfg: CloudConfig) -> str:
    """The processing level the detector is chosen for: the product's, or `cloud.level`."""
    given = None if cfg.level == "auto" else cfg.level
    if spec.level and given and spec.level[:2] != given[:2]:
        raise WetmapError(f"cloud.level is {given}, but the product says {spec.level}", spec.source)
    level = spec.level or given
    if level is None:
        raise WetmapError("the scene brings no cloud mask and no processing level, so the cloud detector cannot "
                          "choose its model: give --level L1C or L2A (cloud.level), a mask file, or --clouds none",
                          spec.source)
    return level


def detector_for(spec: SceneSpec, cfg: CloudConfig) -> Detector:
    names = {b.name for b in spec.bands if b.name}
    bands = csmask_bands(names)
    if bands is None:
        raise WetmapError("the cloud detector needs the blue, green, red and NIR bands (and SWIR 1.6 / 2.2 um "
                          f"for its better model); the scene has {', '.join(sorted(names)) or 'no named band'}",
                          spec.source)
    return CsmaskDetector(bands, scene_level(spec, cfg), cfg.device)


def cache_folder() -> Path:
    root = os.environ.get("WETMAP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wetmap"
    return Path(root) / "clouds"


def cache_key(spec: SceneSpec, detector: Detector, cfg: CloudConfig) -> str:
    """Changes whenever a band file, the level, the detector or its settings change."""
    parts: list[object] = [detector.name, detector.level, cfg.detect_resolution,
                           cfg.detect_overlap]
    for band in spec.select(list(detector.bands)):
        identity: object = None
        if not is_remote(band.path):
            stat = os.stat(band.path)
            identity = (stat.st_size, stat.st_mtime_ns)
        parts.append((os.path.abspath(band.path) if not is_remote(band.path) else band.path, band.index,
                      band.scale, band.offset, band.nodata, identity))
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:20]


def ready_mask(spec: SceneSpec, mask: MaskSource | None, cfg: CloudConfig) -> MaskSource | None:
    """`mask` as `resolve_mask` gave it, with a pending detection done (or taken from the cache)."""
    return detected_mask(spec, cfg) if mask is not None and mask.pending else mask


def detected_mask(spec: SceneSpec, cfg: CloudConfig) -> MaskSource:
    """The detected mask of `spec`, from the cache or detected now."""
    detector = detector_for(spec, cfg)
    path = cache_folder() / f"{cache_key(spec, detector, cfg)}.tif"
    label = f"{detector.name}, {detector.level}, {cfg.detect_resolution:g} m"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_detection(spec, detector, cfg, path)
    return MaskSource(str(path), "classes", "detected", label)


def write_detection(spec: SceneSpec, detector: Detector, cfg: CloudConfig, out: Path) -> None:
    """Detect clouds and shadows over `spec` into a cloud-classes COG at `out` on the scene's grid."""
    bands = spec.select(list(detector.bands))
    grid = scene_grid(bands)
    f = coarsening(grid, cfg.detect_resolution)
    width, height = math.ceil(grid.width / f), math.ceil(grid.height / f)
    size = detector.tile
    overlap = min(cfg.detect_overlap, size // 2)
    tiles = TileGrid(width, height, size, overlap)
    tags = {"DETECTOR": detector.name, "LEVEL": detector.level,
            "DETECT_RESOLUTION": f"{pixel_metres(grid) * f:.1f} m", "SCENE": spec.source,
            "CLASSES": ",".join(f"{value}={name}" for value, name in CLASS_NAMES.items())}
    with OutputSet([out], overwrite=True) as outputs:
        strips = outputs.scratch(out, ".strips.tif")
        with SceneReader(bands, grid, strips=True) as reader, \
                tracker("detect clouds", tiles.shape[0], "tile rows") as advance:
            dst = open_strip_writer(strips, grid, "uint8", CLASSES_DESCRIPTION, CLASS_COLORS, tags)
            try:
                acc = StripAccumulator(tiles, 3, BLEND_CROP)
                for i in range(tiles.shape[0]):
                    row = tiles.row(i)
                    batch = np.empty((len(row), len(bands), size, size), np.float32)
                    valids = []
                    for k, tile in enumerate(row):
                        coarse, valid = _read_coarse(reader, grid, tile.window, f)
                        h, w = valid.shape
                        batch[k] = np.pad(coarse, ((0, 0), (0, size - h), (0, size - w)), mode="edge")
                        valids.append(valid)
                    probs = np.zeros((len(row), 3, size, size), np.float32)
                    busy = [k for k, valid in enumerate(valids) if valid.any()]   # skip tiles of no data
                    if busy:
                        probs[busy] = detector.probabilities(batch[busy])
                    for k, tile in enumerate(row):
                        h, w = valids[k].shape
                        for top, p, ok in acc.add(tile, probs[k, :, :h, :w], valids[k]):
                            _write_classes(dst, grid, f, top, p, ok)
                    advance(1)
            finally:
                dst.close()
        to_cog(strips, outputs[out], "nearest")
        strips.unlink()


def _read_coarse(reader: SceneReader, grid: Grid, window: Window, f: int) -> tuple[np.ndarray, np.ndarray]:
    """One detector tile: its f-times larger window of the scene, block-averaged."""
    r0, c0 = int(window.row_off) * f, int(window.col_off) * f
    hh, ww = int(window.height) * f, int(window.width) * f
    inside = Window(c0, r0, min(ww, grid.width - c0), min(hh, grid.height - r0))
    bands, valid = reader.read(inside)
    if bands.shape[1:] != (hh, ww):   # the last row / column of blocks runs past the scene
        pad = ((0, hh - bands.shape[1]), (0, ww - bands.shape[2]))
        bands = np.pad(bands, ((0, 0), *pad))
        valid = np.pad(valid, pad)
    return block_mean(bands, valid, f)


def _write_classes(dst, grid: Grid, f: int, top: int, probs: np.ndarray, valid: np.ndarray) -> None:
    """Final coarse rows -> classes on the scene grid (each coarse pixel repeated f x f)."""
    classes = np.argmax(probs, axis=0).astype(np.uint8)
    classes[~valid] = NO_DATA
    if f > 1:
        classes = np.repeat(np.repeat(classes, f, axis=0), f, axis=1)
    row = top * f
    write_strip(dst, row, classes[: grid.height - row, : grid.width])
