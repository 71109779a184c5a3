"""Per-pixel probabilities to outputs: scenes combined where clear, classes, percent."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wetmap.io.cog import NODATA


def confidence(probs: np.ndarray) -> np.ndarray:
    """How far each pixel's prediction is from a uniform guess: 0 (uniform) .. 1 (certain).

    probs: (K,h,w) class probabilities, or (1,h,w) P(positive) of a binary model.
    """
    if probs.shape[0] == 1:
        return np.abs(2 * probs[0] - 1)
    k = probs.shape[0]
    return (probs.max(0) - 1.0 / k) * (k / (k - 1))


def combine_scenes(probs: list[np.ndarray], valids: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """One tile's probabilities from several scenes: where one scene is clear it decides; where
    several are, they are blended by confidence.

    probs: per scene (channels,h,w); valids: per scene (h,w). Pixels clear in no scene stay invalid.
    """
    if len(probs) == 1:
        return probs[0], valids[0]
    num = np.zeros_like(probs[0])
    den = np.zeros(probs[0].shape[1:], np.float32)
    for p, ok in zip(probs, valids):
        w = np.where(ok, confidence(p) + 1e-3, 0.0).astype(np.float32)
        num += p * w
        den += w
    valid = np.logical_or.reduce(valids)
    return num / np.maximum(den, 1e-12), valid


def class_labels(probs: np.ndarray, valid: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """uint8 classes (argmax; binary (1,h,w): 1 where P > threshold), 255 where not valid."""
    labels = (probs[0] > threshold).astype(np.uint8) if probs.shape[0] == 1 else probs.argmax(0).astype(np.uint8)
    labels[~valid] = NODATA
    return labels


def class_probability(probs: np.ndarray, c: int) -> np.ndarray:
    """P(class c) from (K,h,w) probabilities, or from a binary model's (1,h,w) P(class 1)."""
    return probs[0] if probs.shape[0] == 1 else probs[c]


def percent(probs: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """uint8 wetland probability in percent (0-100), 255 where not valid."""
    out = np.rint(probs * 100).astype(np.uint8)
    out[~valid] = NODATA
    return out


def wetland_index(classes: Sequence[str]) -> int:
    """The position of the wetland class (the one percent rasters and polygons describe)."""
    return list(classes).index("wetland") if "wetland" in classes else 1
