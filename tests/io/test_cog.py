"""COG conversion: overviews streamed from the strips give the very file GDAL's own give."""

import filecmp
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from wetmap.io.cog import NODATA, StreamedOverviews, open_strip_writer, to_cog, write_strip
from wetmap.io.raster import Grid

COLORS = {0: (1, 2, 3, 255), 1: (4, 5, 6, 255)}


def strip_file(path: Path, grid: Grid, data: np.ndarray, heights: list[int], overviews: StreamedOverviews | None,
               paletted: bool) -> None:
    dst = open_strip_writer(path, grid, "uint8", "wetland", COLORS if paletted else None, {"CLASSES": "other,wetland"})
    row = 0
    for h in heights:
        write_strip(dst, row, data[row:row + h])
        if overviews is not None:
            overviews.add(row, data[row:row + h])
        row += h
    dst.close()
    assert row == grid.height


@pytest.mark.parametrize(("width", "height", "resampling"),
                         [(1024, 768, "NEAREST"), (1024, 768, "AVERAGE"), (2048, 1536, "AVERAGE")])
def test_streamed_overviews_give_gdals_file_byte_for_byte(tmp_path: Path, width: int, height: int,
                                                         resampling: str) -> None:
    grid = Grid(CRS.from_epsg(32633), Affine(10, 0, 300_000, 0, -10, 6_000_000), width, height)
    rng = np.random.default_rng(width + len(resampling))
    data = rng.integers(0, 101, (height, width), dtype=np.uint8)
    data[rng.random(data.shape) < 0.2] = NODATA            # 2 x 2s with 1, 2, 3 and 4 clear pixels
    data[:64, :128] = NODATA
    heights = [37, 100, 1, 250] + [64] * ((height - 388) // 64)
    heights.append(height - sum(heights))
    names = iter(range(100))
    paletted = resampling == "NEAREST"                      # class maps have colours, percent maps none
    streamed = StreamedOverviews.start(grid, resampling, lambda suffix: tmp_path / f"s{next(names)}{suffix}", paletted)
    assert streamed is not None
    strip_file(tmp_path / "a.tif", grid, data, heights, streamed, paletted)
    strip_file(tmp_path / "b.tif", grid, data, heights, None, paletted)
    streamed.close()
    to_cog(tmp_path / "a.tif", tmp_path / "a_cog.tif", resampling, streamed)
    to_cog(tmp_path / "b.tif", tmp_path / "b_cog.tif", resampling)
    with rasterio.open(tmp_path / "a_cog.tif") as src:
        assert src.overviews(1) == [2 ** k for k in range(1, len(streamed.paths) + 1)]
        assert src.tags()["CLASSES"] == "other,wetland" and src.descriptions == ("wetland",)
        assert not paletted or src.colormap(1)[1] == (4, 5, 6, 255)
    assert filecmp.cmp(tmp_path / "a_cog.tif", tmp_path / "b_cog.tif", shallow=False)


def test_overviews_left_to_gdal_where_levels_do_not_halve_exactly(tmp_path: Path) -> None:
    grid = Grid(CRS.from_epsg(32633), Affine(10, 0, 0, 0, -10, 0), 1002, 768)
    assert StreamedOverviews.start(grid, "AVERAGE", lambda s: tmp_path / f"x{s}") is None
    exact = Grid(grid.crs, grid.transform, 1024, 768)
    assert StreamedOverviews.start(exact, "MODE", lambda s: tmp_path / s) is None
    assert StreamedOverviews.start(exact, "AVERAGE", lambda s: tmp_path / s, paletted=True) is None


def test_streamed_overviews_refuse_strips_out_of_order_or_missing(tmp_path: Path) -> None:
    grid = Grid(CRS.from_epsg(32633), Affine(10, 0, 0, 0, -10, 0), 1024, 768)
    names = iter(range(100))
    streamed = StreamedOverviews.start(grid, "NEAREST", lambda suffix: tmp_path / f"s{next(names)}{suffix}")
    assert streamed is not None
    data = np.zeros((768, 1024), np.uint8)
    streamed.add(0, data[:100])
    with pytest.raises(RuntimeError, match="got row 300, expected 100"):
        streamed.add(300, data[300:400])
    strip_file(tmp_path / "a.tif", grid, data, [768], None, True)
    streamed.close()
    with pytest.raises(RuntimeError, match="incomplete"):
        to_cog(tmp_path / "a.tif", tmp_path / "a_cog.tif", "NEAREST", streamed)
    assert not (tmp_path / "a_cog.tif").exists()
