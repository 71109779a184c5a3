"""Which pixels of a chip may train: no data, unknown labels and clouds masked in one compiled
pass, which also finds the clear pixels (the network's input), counts the chip's valid and
wetland pixels and sums its bands over the clear ones.

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
    """A chip's valid pixels, valid wetland (class 1) pixels, clear pixels, and per band the sum
    and the sum of squares of the clear pixels (exact for integer bands: every partial sum stays
    below 2^53). Statistics over clear pixels, not labelled ones: they normalise what the network
    sees, which is every clear pixel, and labels may cover only a few percent of a scene."""

    valid: int
    wetland: int
    clear: int            # clear by the cloud mask, with data in every band
    sums: np.ndarray      # (C,) float64
    squares: np.ndarray   # (C,) float64
    labelled: int = 0     # pixels with a known label (set by the reader)


def mask_chip(raw: np.ndarray, label: np.ndarray, valid: np.ndarray, clear: np.ndarray, nodata: float | None,
              unknown: int) -> ChipCounts:
    """Mask a chip in place and count it.

    raw (C,H,W) band values; label (H,W) uint8 classes, `unknown` where not known; valid (H,W)
    bool, True where the cloud mask says clear. Afterwards `clear` (H,W) is True where the cloud
    mask says clear and no band is no data (`nodata` or NaN), and a pixel is valid when it is
    clear and its label is known; its label is `unknown` where it is not known (no data or
    unlabelled), but kept under clouds.
    """
    check = nodata is not None and not np.isnan(nodata) and _representable(nodata, raw.dtype)
    fill = raw.dtype.type(nodata) if check else raw.dtype.type(0)
    sums, squares = np.zeros(len(raw)), np.zeros(len(raw))
    n, wet, n_clear = _mask(raw, label, valid, clear, fill, check, np.uint8(unknown), sums, squares)
    return ChipCounts(int(n), int(wet), int(n_clear), sums, squares)


def _representable(value: float, dtype: np.dtype) -> bool:
    """Whether a band of `dtype` can hold `value` at all (if not, no pixel is no data)."""
    if dtype.kind == "f":
        return True
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def _mask(raw, label, valid, clear, nodata, check, unknown, sums, squares):
    """Row by row, so that every inner loop is a plain pass over one row that the compiler
    vectorises; the float64 sums may be reordered because integer bands sum exactly in any order."""
    n_bands, height, width = raw.shape
    data = np.empty(width, np.bool_)
    n, wet, n_clear = 0, 0, 0
    for y in range(height):
        lab, ok, seen = label[y], valid[y], clear[y]
        for x in range(width):
            data[x] = True
        for c in range(n_bands):
            row = raw[c, y]
            for x in range(width):
                v = row[x]
                data[x] &= (not np.isnan(v)) & ((not check) | (v != nodata))
        for x in range(width):
            known = data[x] & (lab[x] != unknown)
            if not known:
                lab[x] = unknown
            see = ok[x] & data[x]
            seen[x] = see
            n_clear += see
            use = see & known
            ok[x] = use
            n += use
            wet += use & (lab[x] == 1)
        for c in range(n_bands):
            row = raw[c, y]
            s, q = 0.0, 0.0
            for x in range(width):
                v = np.float64(row[x]) if seen[x] else 0.0   # a select: NaN times 0 is NaN
                s += v
                q += v * v
            sums[c] += s
            squares[c] += q
    return n, wet, n_clear
