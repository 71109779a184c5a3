"""GDAL's checksum summed from strips equals GDAL's own of the written file; a strip lost on the
way to the strip file is found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from wetmap.io.checksum import StripChecksum


@pytest.mark.parametrize(("dtype", "height", "width", "tiled"),
                         [("uint8", 1000, 777, True), ("uint8", 301, 513, False), ("int16", 257, 300, True),
                          ("uint16", 100, 1031, True), ("int32", 60, 90, False)])
def test_strips_in_any_order_give_gdals_checksum(tmp_path: Path, dtype: str, height: int, width: int,
                                                 tiled: bool) -> None:
    rng = np.random.default_rng(height)
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, (height, width), dtype=dtype, endpoint=True)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "dtype": dtype,
               "crs": "EPSG:32632", "transform": rasterio.Affine(10, 0, 0, 0, -10, 0)}
    if tiled:
        profile |= {"tiled": True, "blockxsize": 256, "blockysize": 256}
    with rasterio.open(tmp_path / "r.tif", "w", **profile) as dst:
        dst.write(data, 1)
    with rasterio.open(tmp_path / "r.tif") as src:
        expected = src.checksum(1)
    bounds = [0, *sorted(set(rng.integers(1, height, 7).tolist())), height]
    strips = list(zip(bounds[:-1], bounds[1:]))
    rng.shuffle(strips)
    summed = StripChecksum(width, height)
    for top, bottom in strips:
        summed.add(top, data[top:bottom])
    assert summed.value == expected


def test_rows_missing_added_twice_or_of_another_width_are_refused() -> None:
    summed = StripChecksum(10, 20)
    summed.add(0, np.ones((12, 10), np.uint8))
    with pytest.raises(ValueError, match="8 of 20 rows were never added"):
        _ = summed.value
    with pytest.raises(ValueError, match="added before"):
        summed.add(11, np.ones((2, 10), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        summed.add(19, np.ones((2, 10), np.uint8))
    with pytest.raises(ValueError, match="10 columns"):
        summed.add(12, np.ones((8, 9), np.uint8))
    with pytest.raises(ValueError, match="Int32"):
        summed.add(12, np.ones((8, 10), np.uint32))
