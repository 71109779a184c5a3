"""Is this scene what the model was trained on? Processing level and value range, checked.

A model learns one scale of reflectance. A scene in another (reflectance 0-1 against x 10000,
digital numbers that were never rescaled) is readable and wrong: the model would map nothing, or
everything, and exit 0. Before predicting, each band is read decimated over the whole scene and
its spread is compared with the spread the model was trained on; a
spread 1000x narrower or wider (0-1 against x 10000 is 10,000x), or a median more than 30
training standard deviations from the training mean, is refused. Legitimate differences between
scenes move a band by far less: open water's SWIR spans ~50 where farmland's spans ~3000 (60x),
fresh snow's blue median lies ~28 standard deviations above a summer scene's. A band of one value
(a synthetic test scene) has no spread to judge and is checked by its median alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rasterio.enums import Resampling
from rasterio.windows import Window

from wetmap.errors import WetmapError
from wetmap.io.raster import open_raster
from wetmap.scenes.spec import CONVENTION, BandSource, SceneSpec

SPREAD_RATIO = 1000.0   # a clear-pixel spread this many times narrower / wider than training
MEDIAN_SDS = 30.0       # a median this many training standard deviations from the training mean
SAMPLE_SIZE, MIN_PIXELS = 512, 500


def level_mismatch(trained: dict[str, object], spec: SceneSpec) -> str | None:
    """A one-line warning when the scene's processing level differs from the training scene's."""
    level = trained.get("level")
    if level and spec.level and level != spec.level:
        return (f"{spec.source}: scene is {spec.level}, the model was trained on {level} "
                f"({trained.get('sensor') or 'unknown sensor'}): expect a shift in reflectance")
    return None


def sample_values(bands: Sequence[BandSource]) -> list[np.ndarray]:
    """Per band, its harmonised valid values from samples spread over the whole scene.

    A file with overviews (a COG, a JPEG 2000's resolution levels) is read decimated, so GDAL
    reads a small level (16 full-resolution windows of a SAFE took 13 s: each decoded whole
    1024 px tiles); a file without them in 16 windows (a decimated read decoded a 2048 px
    GeoTIFF ~100 times over). Clouds are not masked here: they move a band's median by a few
    standard deviations at most.
    """
    samples: dict[int, np.ndarray] = {}
    for path in dict.fromkeys(b.path for b in bands):   # each file opened and read once
        members = [(k, b) for k, b in enumerate(bands) if b.path == path]
        indexes = [b.index for _, b in members]
        with open_raster(path) as src:
            if src.overviews(indexes[0]):
                factor = max(1, max(src.width, src.height) // SAMPLE_SIZE)
                shape = (len(indexes), max(1, src.height // factor), max(1, src.width // factor))
                raw = src.read(indexes, out_shape=shape, resampling=Resampling.nearest).reshape(len(indexes), -1)
            else:
                size = min(SAMPLE_SIZE // 4, src.width, src.height)
                rows = np.linspace(0, src.height - size, 4).round().astype(int)
                cols = np.linspace(0, src.width - size, 4).round().astype(int)
                raw = np.concatenate([src.read(indexes, window=Window(c, r, size, size)).reshape(len(indexes), -1)
                                      for r in dict.fromkeys(rows.tolist()) for c in dict.fromkeys(cols.tolist())],
                                     axis=1)
            file_nodata = src.nodata
        for row, (k, band) in zip(raw, members):
            nodata = band.nodata if band.nodata is not None else file_nodata
            values = row.astype(np.float64)
            keep = ~np.isnan(values)
            if nodata is not None and not np.isnan(nodata):
                keep &= values != nodata
            samples[k] = values[keep] * band.scale + band.offset
    return [samples[k] for k in range(len(bands))]


def check_range(spec: SceneSpec, bands: Sequence[BandSource], names: Sequence[str], mean: np.ndarray,
                std: np.ndarray) -> None:
    """Refuse a scene whose pixels lie far outside the model's training statistics."""
    for name, values, m, sd in zip(names, sample_values(bands), mean, std):
        if values.size < MIN_PIXELS:
            continue   # too little data to judge; the level and metadata checks still hold
        low, median, high = np.percentile(values, [1, 50, 99])
        spread, trained = float(high - low), max(float(sd), 1e-6) * 4.0
        scaled = spread > 0 and (spread * SPREAD_RATIO < trained or spread > trained * SPREAD_RATIO)
        if scaled or abs(median - m) > MEDIAN_SDS * sd:
            raise WetmapError(
                f"band {name}: pixels span {_num(low)} to {_num(high)} (1st-99th percentile), "
                f"far outside the model's training range {_num(m - 2 * sd)} to {_num(m + 2 * sd)} "
                f"(mean ± 2 sd); the model expects {CONVENTION} (is the scene scaled 0-1, or in raw "
                "digital numbers?); pass --force to predict anyway", spec.source)


def _num(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
