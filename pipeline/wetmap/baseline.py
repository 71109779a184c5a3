"""Single-pixel spectral-index baselines: the bar a wetland model has to clear.

For NDVI, NDWI (McFeeters) and MNDWI, the best Dice any single threshold (either direction)
reaches on the clear, labelled pixels of a scene. A model that does not beat these has learned
nothing a band ratio could not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wetmap.cloud import CloudMask
from wetmap.io.vector import open_labels
from wetmap.metrics import class_scores
from wetmap.scenes import SceneReader, open_scene, resolve_mask, scene_grid
from wetmap.tiling import blocks


def _index(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / np.maximum(a + b, 1e-6)


def best_threshold_dice(values: np.ndarray, truth: np.ndarray, steps: int = 256) -> float:
    """Best Dice of `values > t` or `values < t` over `steps` quantile thresholds."""
    order = np.argsort(values)
    v, g = values[order], truth[order].astype(np.int64)
    # Positives at or below each cut, so both directions come from one cumulative sum.
    below = np.concatenate([[0], np.cumsum(g)])
    total_pos, n = int(g.sum()), len(v)
    best = 0.0
    for cut in np.unique(np.linspace(1, n - 1, steps).astype(int)):
        low_tp, high_tp = below[cut], total_pos - below[cut]
        for tp, predicted in ((low_tp, cut), (high_tp, n - cut)):
            fp, fn = predicted - tp, total_pos - tp
            best = max(best, class_scores(int(tp), int(fp), int(fn))["dice"])
    return best


def best_index_dice(image: str | Path, clouds: str | Path | None, labels: str | Path) -> dict[str, float]:
    """Best single-threshold Dice of NDVI, NDWI and MNDWI on the clear, labelled pixels.

    `image` is any scene form (wetmap.scenes); `clouds` a mask file, "none", or None for its own.
    """
    spec = open_scene(image)
    bands = spec.select(["B03", "B04", "B08", "B11"])
    grid = scene_grid(bands)
    mask_source = resolve_mask(spec, str(clouds) if clouds else None)
    with SceneReader(bands, grid) as reader:
        truth = open_labels(labels, grid, image_name=spec.source)
        mask = CloudMask(mask_source.path, grid, kind=mask_source.kind) if mask_source else None
        parts: dict[str, list[np.ndarray]] = {"NDVI": [], "NDWI": [], "MNDWI": [], "truth": []}
        for window in blocks(grid.width, grid.height, 1024):
            x, ok = reader.read(window)
            y = truth.read(window)
            ok &= y != 255
            if mask is not None:
                ok &= mask.valid(window)
            green, red, nir, swir = (band[ok] for band in x)
            parts["NDVI"].append(_index(nir, red))
            parts["NDWI"].append(_index(green, nir))
            parts["MNDWI"].append(_index(green, swir))
            parts["truth"].append(y[ok] == 1)
        truth.close()
        if mask is not None:
            mask.close()
    g = np.concatenate(parts.pop("truth"))
    return {name: best_threshold_dice(np.concatenate(v), g) for name, v in parts.items()}
