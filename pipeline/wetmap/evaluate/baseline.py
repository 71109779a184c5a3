"""Single-pixel spectral-index baselines: the bar a wetland model has to clear.

For NDVI, NDWI (McFeeters) and MNDWI, the best Dice any single threshold (either direction)
reaches on the clear, labelled pixels of a scene. A model that does not beat these has learned
nothing a band ratio could not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wetmap.config import CloudConfig
from wetmap.io.vector import open_labels
from wetmap.io.windows import blocks
from wetmap.masks.cloud import CloudMask
from wetmap.masks.detection import ready_mask
from wetmap.metrics import class_scores
from wetmap.scenes import SceneReader, open_scene, resolve_mask, scene_grid


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a - b) / np.maximum(a + b, 1e-6)


def best_threshold(values: np.ndarray, truth: np.ndarray, steps: int = 256) -> tuple[float, float, int]:
    """The best Dice of `values >= t` or `values < t` over `steps` quantile thresholds, with that
    threshold and its direction (+1: at or above is wetland, -1: below; see `apply_threshold`)."""
    order = np.argsort(values)
    v, g = values[order], truth[order].astype(np.int64)
    # Positives below each cut, so both directions come from one cumulative sum.
    below = np.concatenate([[0], np.cumsum(g)])
    total_pos, n = int(g.sum()), len(v)
    best = (0.0, float(v[0]) if n else 0.0, 1)
    for cut in np.unique(np.linspace(1, n - 1, steps).astype(int)):
        low_tp, high_tp = below[cut], total_pos - below[cut]
        for tp, predicted, sign in ((low_tp, cut, -1), (high_tp, n - cut, 1)):
            fp, fn = predicted - tp, total_pos - tp
            dice = class_scores(int(tp), int(fp), int(fn))["dice"]
            if dice > best[0]:   # halfway between the two values the cut separates
                best = (dice, float(v[cut - 1] + v[cut]) / 2, sign)
    return best


def apply_threshold(values: np.ndarray, threshold: float, sign: int) -> np.ndarray:
    """Wetland where `values` are on the wetland side of `threshold` (`best_threshold`'s rule)."""
    return values >= threshold if sign > 0 else values < threshold


def best_threshold_dice(values: np.ndarray, truth: np.ndarray, steps: int = 256) -> float:
    """Best Dice of `values >= t` or `values < t` over `steps` quantile thresholds."""
    return best_threshold(values, truth, steps)[0]


def best_index_dice(image: str | Path, clouds: str | Path | None, labels: str | Path) -> dict[str, float]:
    """Best single-threshold Dice of NDVI, NDWI and MNDWI on the clear, labelled pixels.

    `image` is any scene form (wetmap.scenes); `clouds` a mask file, "none", or None for its own.
    """
    spec = open_scene(image)
    bands = spec.select(["B03", "B04", "B08", "B11"])
    grid = scene_grid(bands)
    mask_source = ready_mask(spec, resolve_mask(spec, str(clouds) if clouds else None), CloudConfig())
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
            parts["NDVI"].append(normalized_difference(nir, red))
            parts["NDWI"].append(normalized_difference(green, nir))
            parts["MNDWI"].append(normalized_difference(green, swir))
            parts["truth"].append(y[ok] == 1)
        truth.close()
        if mask is not None:
            mask.close()
    g = np.concatenate(parts.pop("truth"))
    return {name: best_threshold_dice(np.concatenate(v), g) for name, v in parts.items()}
