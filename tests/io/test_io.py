"""Raster/vector I/O and cloud masks: alignment, decoding, and clear errors for bad input."""

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import Resampling, reproject
from rasterio.windows import Window

from wetmap.config import CloudConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import Grid, band_indexes, open_raster, read_window, write_raster
from wetmap.io.vector import open_labels
from wetmap.masks.cloud import CloudMask, qa_pixel_valid, scl_valid

UTM = CRS.from_epsg(32632)


def grid(width=64, height=48, x0=600_000.0, y0=5_900_000.0, res=10.0, crs=UTM) -> Grid:
    return Grid(crs, Affine(res, 0, x0, 0, -res, y0), width, height)


def test_scl_decoding_default_classes() -> None:
    scl = np.arange(12, dtype=np.uint8)
    assert scl_valid(scl).tolist() == [False, False, True, False, True, True, True, True, False, False, False, True]
    assert (scl_valid(scl.astype(np.uint16)) == scl_valid(scl)).all(), "lookup table (bytes) and np.isin agree"


def test_qa_pixel_bits() -> None:
    qa = np.array([0, 1, 2, 4, 8, 16, 32, 64, 1 << 6 | 1 << 3], dtype=np.uint16)
    # fill, dilated cloud, cirrus, cloud, shadow are invalid; bit 5 (snow) and 6 (clear) are not.
    assert qa_pixel_valid(qa).tolist() == [True, False, False, False, False, False, True, True, False]


def test_cloud_dilation_is_the_same_whatever_the_window(tmp_path: Path) -> None:
    g = grid(40, 40)
    mask = np.zeros((40, 40), np.uint8)
    mask[18:21, 18:21] = 1
    path = tmp_path / "clouds.tif"
    write_raster(path, mask, g, nodata=None, descriptions=["cloud"])
    cm = CloudMask(path, g, CloudConfig(dilate=2))
    whole = cm.valid(Window(0, 0, 40, 40))
    assert (~whole).sum() == 7 * 7
    part = cm.valid(Window(16, 16, 4, 10))
    assert (part == whole[16:26, 16:20]).all()
    cm.close()


def test_labels_on_another_crs_and_resolution_align_like_rasterio(tmp_path: Path) -> None:
    image = grid(60, 50)
    rng = np.random.default_rng(0)
    # Labels at 20 m in UTM zone 33 (another CRS), partly covering the image.
    other = CRS.from_epsg(32633)
    x0, y0 = rasterio.warp.transform(UTM, other, [image.bounds[0] - 100], [image.bounds[3] + 100])
    lab_grid = Grid(other, Affine(20, 0, x0[0], 0, -20, y0[0]), 25, 20)
    labels = rng.integers(0, 2, (20, 25)).astype(np.uint8)
    path = tmp_path / "labels.tif"
    write_raster(path, labels, lab_grid, nodata=255)
    expected = np.full((image.height, image.width), 255, np.uint8)
    reproject(labels, expected, src_transform=lab_grid.transform, src_crs=other, src_nodata=255,
              dst_transform=image.transform, dst_crs=UTM, dst_nodata=255, resampling=Resampling.nearest)
    reader = open_labels(path, image)
    got = reader.read(Window(0, 0, image.width, image.height))
    reader.close()
    assert (got == expected).all()
    assert (got == 255).any() and (got != 255).any(), "partly covered: padded as unknown"


def test_vector_labels_rasterise_by_pixel_centre(tmp_path: Path) -> None:
    import geopandas as gpd
    import shapely

    g = grid(20, 20)
    x0, y0 = g.transform.c, g.transform.f
    # A square covering pixel centres of columns 2..5 and rows 3..7 exactly.
    poly = shapely.box(x0 + 20, y0 - 80, x0 + 60, y0 - 30)
    path = tmp_path / "wetlands.gpkg"
    gpd.GeoDataFrame(geometry=[poly], crs=UTM).to_crs(4326).to_file(path)
    got = open_labels(path, g).read(Window(0, 0, 20, 20))
    expected = np.zeros((20, 20), np.uint8)
    expected[3:8, 2:6] = 1
    assert (got == expected).all()


def test_labels_that_do_not_overlap_name_both_files(tmp_path: Path) -> None:
    path = tmp_path / "far.tif"
    write_raster(path, np.zeros((10, 10), np.uint8), grid(10, 10, x0=700_000), nodata=255)
    with pytest.raises(WetmapError, match=r"far\.tif: does not overlap image\.tif: bounds"):
        open_labels(path, grid(), image_name="image.tif")


def test_bad_rasters_are_one_line_errors(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + b"\x00" * 100)
    with pytest.raises(WetmapError, match=r"corrupt\.tif: not a readable raster"):
        open_raster(corrupt)
    with pytest.raises(WetmapError, match="file not found"):
        open_raster(tmp_path / "missing.tif")
    nocrs = tmp_path / "nocrs.tif"
    with rasterio.open(nocrs, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as dst:
        dst.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(WetmapError, match=r"nocrs\.tif: raster has no CRS"):
        open_raster(nocrs)


def test_band_selection_by_name_and_index(sample) -> None:
    with open_raster(sample.scene_a) as src:
        assert band_indexes(src, ["B08", "B02"]) == [4, 1]
        assert band_indexes(src, [3]) == [3]
        with pytest.raises(WetmapError, match=r"band\(s\) B8A not found \(bands present: B02,B03"):
            band_indexes(src, ["B02", "B8A"])


def test_boundless_read_pads_with_fill(sample) -> None:
    with open_raster(sample.scene_a_scl) as src:
        data = read_window(src, Window(-2, -3, 8, 8), 1, boundless_fill=99)
        inner = src.read(1, window=Window(0, 0, 6, 5))
    assert data.shape == (8, 8) and (data[:3] == 99).all() and (data[:, :2] == 99).all()
    assert (data[3:, 2:] == inner).all()
