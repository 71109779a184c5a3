"""Is this scene what the model was trained on? Processing level and value range, checked.

A model learns one scale of reflectance. A scene in another (reflectance 0-1 against x 10000,
digital numbers that were never rescaled) is readable and wrong: the model would map nothing, or
everything, and exit 0. Before predicting, a few windows spread over the scene are read and the
clear pixels' spread of each band is compared with the spread the model was trained on; a
spread 1000x narrower or wider (0-1 against x 10000 is 10,000x), or a median more than 30
training standard deviations from the training mean, is refused. Legitimate differences between
scenes move a band by far less: open water's SWIR spans ~50 where farmland's spans ~3000 (60x),
fresh snow's blue median lies ~28 standard deviations above a summer scene's. A band of one value
(a synthetic test scene) has no spread to judge and is checked by its median alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.windows import Window

from wetmap.cloud import CloudMask
from wetmap.config import CloudConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import Grid
from wetmap.scenes.reader import SceneReader
from wetmap.scenes.spec import CONVENTION, BandSource, MaskSource, SceneSpec

SPREAD_RATIO = 1000.0   # a clear-pixel spread this many times narrower / wider than training
MEDIAN_SDS = 30.0       # a median this many training standard deviations from the training mean
SAMPLE_WINDOWS, SAMPLE_SIZE, MIN_PIXELS = 4, 256, 500


def scene_info(spec: SceneSpec) -> dict[str, Any]:
    """What a model bundle records of the scene it was trained on."""
    return {"convention": CONVENTION, "sensor": spec.sensor, "level": spec.level, "form": spec.form}


def level_mismatch(trained: dict[str, Any], spec: SceneSpec) -> str | None:
    """A one-line warning when the scene's processing level differs from the training scene's."""
    level = trained.get("level")
    if level and spec.level and level != spec.level:
        return (f"{spec.source}: scene is {spec.level}, the model was trained on {level} "
                f"({trained.get('sensor') or 'unknown sensor'}): expect a shift in reflectance")
    return None


def sample_clear(bands: Sequence[BandSource], mask: MaskSource | None, grid: Grid,
                 cloud: CloudConfig) -> np.ndarray:
    """(C, N) clear-pixel values from a grid of windows spread over the scene."""
    size = min(SAMPLE_SIZE, grid.width, grid.height)
    rows = np.linspace(0, grid.height - size, SAMPLE_WINDOWS).round().astype(int)
    cols = np.linspace(0, grid.width - size, SAMPLE_WINDOWS).round().astype(int)
    out = []
    with SceneReader(bands, grid) as reader:
        clouds = CloudMask(mask.path, grid, cloud, kind=mask.kind) if mask else None
        try:
            for r in dict.fromkeys(rows.tolist()):
                for c in dict.fromkeys(cols.tolist()):
                    window = Window(c, r, size, size)
                    values, ok = reader.read(window)
                    if clouds is not None:
                        ok &= clouds.valid(window)
                    out.append(values[:, ok])
        finally:
            if clouds is not None:
                clouds.close()
    return np.concatenate(out, axis=1) if out else np.zeros((len(bands), 0), np.float32)


def check_range(spec: SceneSpec, bands: Sequence[BandSource], mask: MaskSource | None, grid: Grid,
                names: Sequence[str], mean: np.ndarray, std: np.ndarray, cloud: CloudConfig) -> None:
    """Refuse a scene whose clear pixels lie far outside the model's training statistics."""
    values = sample_clear(bands, mask, grid, cloud)
    if values.shape[1] < MIN_PIXELS:
        return   # too little clear sky to judge; the level and metadata checks still hold
    low, median, high = np.percentile(values, [1, 50, 99], axis=1)
    for k, name in enumerate(names):
        spread, trained = float(high[k] - low[k]), max(float(std[k]), 1e-6) * 4.0
        scaled = spread > 0 and (spread * SPREAD_RATIO < trained or spread > trained * SPREAD_RATIO)
        if scaled or abs(median[k] - mean[k]) > MEDIAN_SDS * std[k]:
            raise WetmapError(
                f"band {name}: clear pixels span {_num(low[k])} to {_num(high[k])} (1st-99th percentile), "
                f"far outside the model's training range {_num(mean[k] - 2 * std[k])} to "
                f"{_num(mean[k] + 2 * std[k])} (mean ± 2 sd); the model expects {CONVENTION} "
                "(is the scene scaled 0-1, or in raw digital numbers?); pass --force to predict anyway",
                spec.source)


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
