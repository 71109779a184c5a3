"""GDAL's band checksum, summed from the strips of a raster as they are written.

The raster a COG is made from was read back in full only to learn which pixels the COG must hold;
the arrays written already say it, and say it better: a block lost while the strip file was
flushed reads back as no data, so its read-back would have expected the loss. GDAL's checksum
(GDALChecksumImage: each pixel's value modulo one of 11 primes, chosen by its place in row-major
order, summed modulo 2**16) is a sum, so strips may come in any order (Dask parts do). Written
here because GDAL computes it only from a dataset; tests/io/test_checksum.py holds it to
rasterio's `checksum` of the written file.
"""

from __future__ import annotations

import threading

import numpy as np

PRIMES = np.array([7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43], np.uint8)
PERIOD = len(PRIMES)
CHUNK_ROWS = 4 * PERIOD   # rows reduced at once: the primes table and the remainders stay a few MB


class StripChecksum:
    """The checksum GDAL gives band 1 of a `width` x `height` integer raster, from its strips."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        # Row r's primes are row (r % 11) of this table; CHUNK_ROWS rows from any row are one slice.
        places = np.arange(PERIOD + CHUNK_ROWS)[:, None] * width + np.arange(width)
        self._primes = PRIMES[places % PERIOD]
        self._seen = np.zeros(height, bool)
        self._total = 0
        self._lock = threading.Lock()

    def add(self, row: int, strip: np.ndarray) -> None:
        """Rows `row`... (h, width) of the raster, each row once; from any thread."""
        if (strip.ndim != 2 or strip.shape[1] != self.width or not np.issubdtype(strip.dtype, np.integer)
                or np.iinfo(strip.dtype).max > np.iinfo(np.int32).max):
            raise ValueError(f"a strip of {self.width} columns of an Int32-sized integer expected, "
                             f"got {strip.dtype} {strip.shape}")
        stop = row + strip.shape[0]
        if row < 0 or stop > self.height:
            raise ValueError(f"rows {row}..{stop - 1} are outside the raster's {self.height}")
        total = 0
        for top in range(0, strip.shape[0], CHUNK_ROWS):   # reads only the primes table: threads may add at once
            rows = strip[top:top + CHUNK_ROWS]
            start = (row + top) % PERIOD
            primes = self._primes[start:start + rows.shape[0]]
            if rows.dtype == np.uint8:
                total += int(np.remainder(rows, primes).sum(dtype=np.int64))
            else:   # GDAL reads other integers as Int32 and takes C's remainder (the dividend's sign)
                total += int(np.fmod(rows.astype(np.int64), primes).sum(dtype=np.int64))
        with self._lock:
            if self._seen[row:stop].any():
                raise ValueError(f"rows {row}..{stop - 1} were added before")
            self._seen[row:stop] = True
            self._total += total

    @property
    def value(self) -> int:
        """The checksum, once every row is in."""
        if not self._seen.all():
            raise ValueError(f"{int((~self._seen).sum())} of {self.height} rows were never added")
        return self._total % 65536
