"""Prediction on a Dask cluster: bands of tile rows predicted on the workers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wetmap.config import PredictConfig
from wetmap.io.cog import NODATA
from wetmap.io.raster import Grid
from wetmap.io.windows import TileGrid
from wetmap.predict.classes import class_labels, class_probability, percent, wetland_index
from wetmap.predict.runner import TilePredictor, predict_strips
from wetmap.predict.scenes import Scene, SceneStack, read_env
from wetmap.runtime import resolve_device


def part_bounds(tiles: TileGrid, megapixels: float) -> list[tuple[int, int]]:
    """Contiguous ranges [first, stop) of tile rows, each about `megapixels` of output (>= 1 row)."""
    per_row = tiles.stride * tiles.width
    rows = max(1, int(megapixels * 1e6 // per_row))
    count = tiles.shape[0]
    return [(a, min(a + rows, count)) for a in range(0, count, rows)]


_WORKER_PREDICTORS: dict[tuple[str, int, int, str, str, str], TilePredictor] = {}


def predict_part(bundle_path: str, scenes: Sequence[Scene], grid: Grid, cfg: PredictConfig, first: int,
                 stop: int) -> tuple[int, np.ndarray, np.ndarray]:
    """On a Dask worker: final rows of tile rows first..stop-1 as (row offset, classes, percent).

    Tile row first-1 is predicted again for context (blending needs it) and its rows dropped, so
    every output row is computed exactly as in one process. The bundle loads once per worker.
    """
    from wetmap.model.bundle import load_bundle

    stat = Path(bundle_path).stat()   # a retrained bundle at the same path is a new model
    key = (bundle_path, stat.st_mtime_ns, stat.st_size, cfg.device, cfg.precision, cfg.tta)
    if key not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS[key] = TilePredictor(load_bundle(bundle_path), resolve_device(cfg.device), cfg.precision,
                                                cfg.tta)
    predictor = _WORKER_PREDICTORS[key]
    tiles = TileGrid(grid.width, grid.height, *cfg.window)
    top = tiles.row_starts[first]
    bottom = tiles.row_starts[stop] if stop < tiles.shape[0] else grid.height
    classes = np.full((bottom - top, grid.width), NODATA, np.uint8)
    prob = np.full((bottom - top, grid.width), NODATA, np.uint8)
    wet = wetland_index(predictor.bundle.classes)
    with read_env():
        stack = SceneStack(scenes, grid, predictor.bundle.bands, cfg.cloud, raw=predictor.raw_input)
        try:
            for row, strip, valid in predict_strips(predictor, stack, tiles, max(0, first - 1), stop, cfg):
                lo, hi = max(row, top), min(row + valid.shape[0], bottom)
                if lo < hi:
                    part = slice(lo - row, hi - row)
                    classes[lo - top:hi - top] = class_labels(strip[:, part], valid[part], predictor.bundle.threshold)
                    prob[lo - top:hi - top] = percent(class_probability(strip[:, part], wet), valid[part])
        finally:
            stack.close()
    return top, classes, prob


def _predict_on_cluster(client, bundle_path: str, scenes: list[Scene], grid: Grid, cfg: PredictConfig,
                        tiles: TileGrid, write) -> None:
    """Parts of `cfg.part_megapixels` on the workers, at most two per worker in flight, each written
    as it arrives (in any order: they do not overlap), so the client never holds more than those."""
    from distributed import as_completed

    workers = max(1, len(client.scheduler_info().get("workers", {})))
    parts = iter(part_bounds(tiles, cfg.part_megapixels))

    def submit() -> object | None:
        bounds = next(parts, None)
        return None if bounds is None else client.submit(predict_part, bundle_path, scenes, grid, cfg, *bounds,
                                                         pure=False)

    running = as_completed([f for f in (submit() for _ in range(2 * workers)) if f is not None])
    for future in running:
        top, labels, pct = future.result()
        future.release()
        write(top, labels, pct)
        following = submit()
        if following is not None:
            running.add(following)
