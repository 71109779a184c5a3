"""The read-back of a written raster on a pool of threads: GDAL's checksums, every block of every
overview decoded, a block that cannot be decoded found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from wetmap.errors import WetmapError
from wetmap.io.outputs import verify
from wetmap.io.readback import decode_all

TRANSFORM = rasterio.Affine(10, 0, 0, 0, -10, 0)


def _raster(path: Path, dtype: str, count: int, height: int, width: int, layout: str) -> Path:
    rng = np.random.default_rng(height + count)
    if np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, (count, height, width), dtype=dtype, endpoint=True)
    else:
        data = rng.normal(0, 100, (count, height, width)).astype(dtype)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": dtype,
               "crs": "EPSG:32632", "transform": TRANSFORM, "compress": "deflate"}
    if layout != "striped":
        profile |= {"tiled": True, "blockxsize": 256, "blockysize": 256}
    plain = path.with_name(f"plain_{path.name}")
    with rasterio.open(plain if layout == "cog" else path, "w", **profile) as dst:
        dst.write(data)
    if layout == "cog":
        rasterio.shutil.copy(plain, path, driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256, OVERVIEW_COUNT=3)
    return path


@pytest.mark.parametrize(("dtype", "count", "height", "width", "layout"),
                         [("uint8", 1, 1000, 1300, "cog"), ("uint16", 6, 300, 517, "tiled"),
                          ("int16", 2, 257, 300, "striped"), ("int32", 1, 600, 90, "cog"),
                          ("float32", 2, 300, 400, "cog")])
def test_the_checksums_are_gdals_on_any_number_of_threads(tmp_path: Path, dtype: str, count: int, height: int,
                                                          width: int, layout: str) -> None:
    path = _raster(tmp_path / "r.tif", dtype, count, height, width, layout)
    with rasterio.open(path) as src:
        expected = [src.checksum(b) for b in src.indexes]
        assert (len(src.overviews(1)) == 3) == (layout == "cog")
    assert decode_all(path, threads=1) == expected
    assert decode_all(path, threads=3) == expected


@pytest.mark.parametrize("overview", [None, 0, 2])
def test_a_block_that_cannot_be_decoded_fails_the_check(tmp_path: Path, overview: int | None) -> None:
    """One tile's bytes overwritten, at full resolution or in an overview: the file still opens
    (its header is intact), and only decoding that tile finds it."""
    path = _raster(tmp_path / "r.tif", "uint8", 1, 1000, 1300, "cog")
    with rasterio.open(path) as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1, ovr=overview))
        size = int(src.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=1, ovr=overview))
    with path.open("r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * size)
    with rasterio.open(path) as src:
        assert src.width == 1300   # still opens
    with pytest.raises(WetmapError, match="r.tif: was not written completely"):
        verify(path, path)


def test_a_wide_block_row_is_decoded_by_fewer_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What is decoded at once stays under IN_FLIGHT_BYTES, however many threads are asked for."""
    from wetmap.io import readback

    path = _raster(tmp_path / "r.tif", "uint8", 1, 1000, 1300, "cog")
    pools: list[int] = []

    class Recorded(readback.ThreadPoolExecutor):
        def __init__(self, workers: int, **kwargs: object) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(readback, "ThreadPoolExecutor", Recorded)
    monkeypatch.setattr(readback, "STRIP_BYTES", 1)           # one block row (256 x 1300 px) per task
    monkeypatch.setattr(readback, "IN_FLIGHT_BYTES", 3 * 256 * 1300)
    with rasterio.open(path) as src:
        expected = [src.checksum(1)]
    assert decode_all(path, threads=8) == expected and pools == [3]
    monkeypatch.setattr(readback, "IN_FLIGHT_BYTES", 1)
    assert decode_all(path, threads=8) == expected and pools == [3, 1]
