"""Masked Dice, IoU, precision and recall from summed counts."""

import math

import numpy as np
import torch

from wetmap.metrics import confusion, scores


def brute(pred: np.ndarray, target: np.ndarray, valid: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((k, 4), np.int64)
    for c in range(k):
        p, t = pred[valid] == c, target[valid] == c
        out[c] = [(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()]
    return out


def test_confusion_matches_brute_force_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    for k in (2, 4):
        pred = rng.integers(0, k, (3, 40, 50))
        target = rng.integers(0, k, (3, 40, 50))
        target[rng.random(target.shape) < 0.1] = 255
        valid = (rng.random(pred.shape) < 0.8) & (target != 255)
        expected = brute(pred, target, valid, k)
        assert (confusion(pred, target, valid, k) == expected).all()
        got = confusion(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(valid), k)
        assert (got.numpy() == expected).all()


def test_counts_add_exactly_across_tiles() -> None:
    rng = np.random.default_rng(1)
    pred, target = rng.integers(0, 2, (64, 64)), rng.integers(0, 2, (64, 64))
    valid = rng.random((64, 64)) < 0.7
    whole = confusion(pred, target, valid, 2)
    parts = sum(confusion(pred[s], target[s], valid[s], 2) for s in (np.s_[:20], np.s_[20:41], np.s_[41:]))
    assert (whole == parts).all()


def test_dice_equals_2j_over_1_plus_j() -> None:
    rng = np.random.default_rng(2)
    pred, target = rng.integers(0, 3, 5000), rng.integers(0, 3, 5000)
    s = scores(confusion(pred, target, None, 3))
    for c in s["per_class"]:
        j = c["iou"]
        assert math.isclose(c["dice"], 2 * j / (1 + j), rel_tol=1e-12)


def test_absent_class_has_undefined_dice_not_zero_or_one() -> None:
    pred = np.zeros((8, 8), int)
    target = np.zeros((8, 8), int)
    s = scores(confusion(pred, target, None, 2))
    assert s["per_class"][1]["undefined"] and math.isnan(s["per_class"][1]["dice"])
    assert s["per_class"][0]["dice"] == 1.0
    assert s["macro"]["dice"] == 1.0  # the mean skips the undefined class


def test_micro_and_macro() -> None:
    counts = np.array([[10, 0, 0, 90], [5, 5, 0, 90]])
    s = scores(counts)
    assert math.isclose(s["micro"]["dice"], 2 * 15 / (2 * 15 + 5))
    assert math.isclose(s["macro"]["dice"], (1.0 + 10 / 15) / 2)
    assert math.isclose(scores(counts, include_background=False)["macro"]["dice"], 10 / 15)


def test_best_threshold_returns_a_threshold_that_gives_its_dice() -> None:
    """The baseline's threshold, applied by its own rule, reproduces the Dice it reports, in both
    directions (water high in NDWI, vegetation low)."""
    import numpy as np

    from wetmap.evaluate.baseline import apply_threshold, best_threshold

    rng = np.random.default_rng(0)
    truth = rng.random(5000) < 0.2
    values = np.where(truth, rng.normal(0.4, 0.2, 5000), rng.normal(-0.2, 0.2, 5000))
    for sign_in in (1, -1):
        dice, t, sign = best_threshold(values * sign_in, truth, steps=512)
        pred = apply_threshold(values * sign_in, t, sign)
        got = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        assert sign == sign_in and abs(got - dice) < 1e-9 and dice > 0.8


def test_class_labels_use_the_bundle_threshold() -> None:
    import numpy as np

    from wetmap.predict.classes import class_labels

    p = np.array([[[0.2, 0.4, 0.6, 0.8]]], np.float32)
    ok = np.ones((1, 4), bool)
    assert class_labels(p, ok).tolist() == [[0, 0, 1, 1]]
    assert class_labels(p, ok, threshold=0.7).tolist() == [[0, 0, 0, 1]]
