"""Exact masked confusion counts and the scores derived from them (numpy or torch).

Counts are integers and add exactly, so a region's or a scene's score always comes from summed
counts, never from a mean of tile scores. A class with no truth and no prediction in the valid
area has an undefined Dice (NaN), never a silent 1 or 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

COUNT_NAMES = ("tp", "fp", "fn", "tn")
SCORE_NAMES = ("dice", "iou", "precision", "recall")


def confusion(pred_labels: Any, target: Any, valid: Any | None, num_classes: int) -> Any:
    """(num_classes, 4) int64 counts [TP, FP, FN, TN] per class over the valid pixels.

    Works on numpy arrays or torch tensors (returned in kind). Pixels whose prediction or target
    is outside 0..num_classes-1 (e.g. 255) must be excluded by `valid`; they are ignored if not.
    """
    is_torch = isinstance(pred_labels, torch.Tensor)
    xp_pred = pred_labels.reshape(-1)
    xp_target = target.reshape(-1)
    if is_torch:
        keep = (xp_pred >= 0) & (xp_pred < num_classes) & (xp_target >= 0) & (xp_target < num_classes)
        if valid is not None:
            keep &= valid.reshape(-1).bool()
        index = xp_target[keep].long() * num_classes + xp_pred[keep].long()
        cm = torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
        return torch.stack(matrix_counts(cm), 1).to(torch.int64)
    p = np.asarray(xp_pred).astype(np.int64, copy=False)
    t = np.asarray(xp_target).astype(np.int64, copy=False)
    kept = (p >= 0) & (p < num_classes) & (t >= 0) & (t < num_classes)
    if valid is not None:
        kept &= np.asarray(valid).reshape(-1).astype(bool, copy=False)
    counts = np.bincount(t[kept] * num_classes + p[kept], minlength=num_classes * num_classes)
    return np.stack(matrix_counts(counts.reshape(num_classes, num_classes)), 1).astype(np.int64)


def matrix_counts(cm: Any) -> tuple[Any, Any, Any, Any]:
    """Per-class TP, FP, FN, TN vectors from a (truth, prediction) confusion matrix."""
    tp = cm.diagonal()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return tp, fp, fn, cm.sum() - tp - fp - fn


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def class_scores(tp: int, fp: int, fn: int, tn: int = 0) -> dict[str, float]:
    """Dice, IoU, precision, recall of one set of counts; NaN where undefined."""
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "iou": _ratio(tp, tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
    }


def mean_defined(rows: Sequence[Mapping[str, float]], keys: Iterable[str] = SCORE_NAMES) -> dict[str, float]:
    """The macro mean: each score averaged over the rows (classes, regions) where it is defined."""
    means = {}
    for key in keys:
        values = [row[key] for row in rows if not math.isnan(row[key])]
        means[key] = float(np.mean(values)) if values else math.nan
    return means


def scores(counts: Any, include_background: bool = True) -> dict[str, Any]:
    """Per-class scores plus micro (summed counts) and macro (mean of defined classes) means.

    Returns {"per_class": [{"dice", "iou", "precision", "recall", "undefined"}, ...],
             "micro": {...}, "macro": {...}}; binary maps report class 1 (wetland) as per_class[1].
    """
    c = np.asarray(counts.cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.int64)
    per_class = []
    for tp, fp, fn, tn in c:
        s = class_scores(int(tp), int(fp), int(fn), int(tn))
        s["undefined"] = math.isnan(s["dice"])
        per_class.append(s)
    chosen = c if include_background else c[1:]
    per = per_class if include_background else per_class[1:]
    tp, fp, fn, tn = (int(v) for v in chosen.sum(0))
    return {"per_class": per_class, "micro": class_scores(tp, fp, fn, tn), "macro": mean_defined(per)}
