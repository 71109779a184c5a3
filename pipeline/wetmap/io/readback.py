"""Reading a written raster back in full, on every core: the check before an output's rename.

GDAL's own checksum (`GDALChecksumImage`, rasterio's `checksum`) decodes one block at a time in
the calling thread, so the check of a large map was a serial tail after the last tile, however
many cores the machine has. Here full-width strips of block rows are decoded by a pool of
threads, each with its own dataset handle (GDAL decodes without the GIL; a handle is not shared
between threads), and the checksum is summed from them (io.checksum): the same value, each block
decoded once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from wetmap.io.checksum import StripChecksum
from wetmap.runtime import STREAM_CACHE_MB, gdal_env

STRIP_BYTES = 8 << 20      # decoded bytes per task: a few block rows of a map, never a whole scene
IN_FLIGHT_BYTES = 128 << 20  # at most this decoded at once: fewer threads for a map whose block row is wider


def decode_all(path: Path, threads: int | None = None) -> list[int]:
    """GDAL's checksum of each full-resolution band of `path`, after decoding every block of
    those bands and of every overview; any block that cannot be decoded raises."""
    import rasterio

    # One pass over every block gains nothing from a block cache; under GDAL's default (5 % of the
    # machine's memory) the check's memory grew with the raster (benchmarks/bench_dask_predict.py).
    with gdal_env(STREAM_CACHE_MB):
        with rasterio.open(path) as src:
            width, height, count, levels = src.width, src.height, src.count, len(src.overviews(1))
            dtype = np.dtype(src.dtypes[0])
        if not _summable(dtype):   # GDAL's checksum of floats rounds them: leave it to GDAL
            return gdal_checksums(path, levels)
        jobs = []
        for level in range(levels + 1):   # 0: full resolution, then each overview
            with rasterio.open(path, **_level(level)) as src:
                jobs += [(level, w) for w in _strips(src.width, src.height, src.block_shapes[0][0],
                                                       count * dtype.itemsize)]
        sums = [StripChecksum(width, height) for _ in range(count)]

        def decode(job: tuple[int, Window]) -> None:
            level, window = job
            with rasterio.open(path, **_level(level)) as src:
                data = src.read(window=window)
            if level == 0:
                for band, summed in zip(data, sums):
                    summed.add(int(window.row_off), band)

        strip_bytes = max(int(window.width * window.height) for _, window in jobs) * count * dtype.itemsize
        workers = max(1, min(threads or min(16, len(os.sched_getaffinity(0))), IN_FLIGHT_BYTES // strip_bytes))
        with ThreadPoolExecutor(workers, thread_name_prefix="readback") as pool:
            for _ in pool.map(decode, jobs):
                pass
    return [summed.value for summed in sums]


def _level(level: int) -> dict[str, int]:
    return {"overview_level": level - 1} if level else {}


def _summable(dtype: np.dtype) -> bool:
    return bool(np.issubdtype(dtype, np.integer) and np.iinfo(dtype).max <= np.iinfo(np.int32).max)


def _strips(width: int, height: int, block_rows: int, pixel_bytes: int) -> Iterator[Window]:
    """Full-width windows of whole block rows, about STRIP_BYTES decoded each."""
    rows = max(1, STRIP_BYTES // max(1, width * pixel_bytes * block_rows)) * block_rows
    for top in range(0, height, rows):
        yield Window(0, top, width, min(rows, height - top))


def gdal_checksums(path: Path, levels: int) -> list[int]:
    """GDAL's own way: its checksum of every band and of `levels` overviews, a block at a time in
    this thread."""
    import rasterio

    with rasterio.open(path) as src:
        pixels = [src.checksum(b) for b in src.indexes]
    for level in range(levels):
        with rasterio.open(path, overview_level=level) as src:
            for b in src.indexes:
                src.checksum(b)
    return pixels
