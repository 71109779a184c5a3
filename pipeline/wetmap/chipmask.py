"""Which pixels of a chip may train: no data, unknown labels and clouds masked in one compiled
pass, which also counts the chip's valid and wetland pixels and sums its bands over them.

Why compiled: in numpy this took five passes with temporaries (any band no data, label known,
combine, two sums weighted by the mask in float64), about a third of the image's decoding time in
a profile of `wetmap tile`; here each row of the chip is visited once per band, and the GIL is
released so that the other threads keep decoding and writing meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit


@dataclass
class ChipCounts:
    """A chip's valid pixels, valid wetland (class 1) pixels, and per band the sum and the sum of
    squares of the valid pixels (exact for integer bands: every partial sum stays below 2^53)."""

    valid: int
    wetland: int
    sums: np.ndarray      # (C,) float64
    squares: np.ndarray   # (C,) float64
    clear: int = 0        # pixels clear by the cloud mask, with data (set by the reader)
    labelled: int = 0     # pixels with a known label (set by the reader)


def mask_chip(raw: np.ndarray, label: np.ndarray, valid: np.ndarray, nodata: float | None,
              unknown: int) -> ChipCounts:
    """Mask a chip in place and count it.

    raw (C,H,W) band values; label (H,W) uint8 classes, `unknown` where not known; valid (H,W)
    bool, True where the cloud mask says clear. Afterwards a pixel is valid when it is clear, no
    band is no data (`nodata` or NaN) and its label is known; its label is `unknown` where it is
    not known (no data or unlabelled), but kept under clouds.
    """
    check = nodata is not None and not np.isnan(nodata) and _representable(nodata, raw.dtype)
    fill = raw.dtype.type(nodata) if check else raw.dtype.type(0)
    sums, squares = np.zeros(len(raw)), np.zeros(len(raw))
    n, wet = _mask(raw, label, valid, fill, check, np.uint8(unknown), sums, squares)
    return ChipCounts(int(n), int(wet), sums, squares)


def _representable(value: float, dtype: np.dtype) -> bool:
    """Whether a band of `dtype` can hold `value` at all (if not, no pixel is no data)."""
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _mask(raw, label, valid, nodata, check, unknown, sums, squares):
    """Row by row, so that every inner loop is a plain pass over one row that the compiler
    vectorises; the float64 sums may be reordered because integer bands sum exactly in any order."""
    n_bands, height, width = raw.shape
    known = np.empty(width, np.bool_)
    n, wet = 0, 0
    for y in range(height):
        lab, ok = label[y], valid[y]
        for x in range(width):
            known[x] = lab[x] != unknown
        for c in range(n_bands):
            row = raw[c, y]
            for x in range(width):
                v = row[x]
                known[x] &= (not np.isnan(v)) & ((not check) | (v != nodata))
        for x in range(width):
            if not known[x]:
                lab[x] = unknown
            use = ok[x] & known[x]
            ok[x] = use
            n += use
            wet += use & (lab[x] == 1)
        for c in range(n_bands):
            row = raw[c, y]
            s, q = 0.0, 0.0
            for x in range(width):
                v = np.float64(row[x]) if ok[x] else 0.0   # a select: NaN times 0 is NaN
                s += v
                q += v * v
            sums[c] += s
            squares[c] += q
    return n, wet
