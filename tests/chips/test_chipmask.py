"""The compiled chip mask against a plain numpy statement of the same rules."""

from __future__ import annotations

import numpy as np
import pytest

from wetmap.chips.mask import mask_chip
from wetmap.io.raster import nodata_valid

UNKNOWN = 255


def reference(raw: np.ndarray, label: np.ndarray, clear: np.ndarray, nodata: float | None):
    """The rules in numpy: no data as `cloud.nodata_valid` (prediction's definition) has it;
    statistics over the clear pixels with data, labelled or not."""
    data = nodata_valid(raw, nodata)
    known = data & (label != UNKNOWN)
    valid = known & clear
    seen = data & clear
    x = raw[:, seen].astype(np.float64)
    return np.where(known, label, UNKNOWN), valid, seen, x.sum(1), (x * x).sum(1)


def run(raw, label, valid, nodata=0):
    clear = np.zeros_like(valid)
    return mask_chip(raw, label, valid, clear, nodata, UNKNOWN), clear


def chip(dtype: str, seed: int = 0, shape: tuple[int, int] = (37, 53)):
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 4000, (4, *shape)).astype(dtype)
    raw[rng.random(raw.shape) < 0.01] = 0                       # no data in single bands
    label = rng.choice(np.array([0, 1, 2, UNKNOWN], np.uint8), shape, p=[0.6, 0.2, 0.1, 0.1])
    clear = rng.random(shape) > 0.25
    return raw, label, clear


@pytest.mark.parametrize("dtype", ["uint16", "int16", "uint8", "float32"])
def test_matches_numpy(dtype: str) -> None:
    raw, label, clear = chip(dtype)
    if dtype == "float32":
        raw[1, 3, 4] = raw[0, 10, 11] = np.nan
    want_label, want_valid, want_seen, want_sums, want_squares = reference(raw, label, clear, 0)
    counts, seen = run(raw, label, clear)
    assert np.array_equal(label, want_label) and np.array_equal(clear, want_valid)
    assert np.array_equal(seen, want_seen) and counts.clear == want_seen.sum() > counts.valid
    assert counts.valid == want_valid.sum()
    assert counts.wetland == (want_valid & (want_label == 1)).sum()
    if dtype == "float32":
        np.testing.assert_allclose(counts.sums, want_sums, rtol=1e-12)
        np.testing.assert_allclose(counts.squares, want_squares, rtol=1e-12)
    else:   # integer bands sum exactly, in any order
        assert np.array_equal(counts.sums, want_sums) and np.array_equal(counts.squares, want_squares)


def test_labels_under_clouds_are_kept_but_not_valid() -> None:
    raw = np.full((2, 3, 3), 100, np.uint16)
    label = np.ones((3, 3), np.uint8)
    clear = np.zeros((3, 3), bool)
    counts, seen = run(raw, label, clear)
    assert (label == 1).all() and not clear.any() and not seen.any() and counts.valid == 0 and counts.sums.sum() == 0


@pytest.mark.parametrize("nodata", [None, float("nan"), -9999.0, 70000.0, 0.5])
def test_nodata_a_band_cannot_hold_masks_nothing(nodata: float | None) -> None:
    raw, label, clear = chip("uint16", seed=1)
    want_label, want_valid, *_ = reference(raw, label, clear, None)
    run(raw, label, clear, nodata)
    assert np.array_equal(label, want_label) and np.array_equal(clear, want_valid)


def test_views_into_a_batch_are_masked_in_place() -> None:
    batch = np.zeros((3, 4, 64, 64), np.uint16)
    labels = np.full((3, 64, 64), UNKNOWN, np.uint8)
    valid = np.zeros((3, 64, 64), bool)
    raw, label, clear = chip("uint16", seed=2, shape=(40, 50))
    batch[1, :, :40, :50], labels[1, :40, :50], valid[1, :40, :50] = raw, label, clear
    want_label, want_valid, _, want_sums, _ = reference(raw, label, clear, 0)
    counts, _ = run(batch[1, :, :40, :50], labels[1, :40, :50], valid[1, :40, :50])
    assert np.array_equal(labels[1, :40, :50], want_label) and np.array_equal(valid[1, :40, :50], want_valid)
    assert np.array_equal(counts.sums, want_sums)
    assert not valid[[0, 2]].any() and not valid[1, 40:].any() and not valid[1, :, 50:].any()
