"""`wetmap sample` output, read back with rasterio and geopandas, matches its description."""

import filecmp

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
from scipy import ndimage

from wetmap.sample import make_sample

BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")


def test_scenes_look_like_sentinel2_l2a(sample) -> None:
    for path in (sample.scene_a, sample.scene_b):
        with rasterio.open(path) as src:
            assert src.descriptions == BANDS
            assert src.dtypes == ("uint16",) * 6 and src.nodata == 0
            assert src.res == (10.0, 10.0)
            assert src.crs.to_epsg() == 32632 and src.crs.is_projected
            block_h, block_w = src.block_shapes[0]
            assert block_h == block_w < src.width, "internally tiled"
            assert src.compression.name.lower() == "deflate"
            data = src.read()
        nodata = (data == 0).all(0)
        assert 0.02 < nodata.mean() < 0.3, "a diagonal no-data edge cuts a corner"
        rows = np.flatnonzero(nodata.any(1))
        assert len(rows) > 10 and nodata.sum(1)[rows].std() > 0, "the edge is diagonal, not a straight strip"
        assert data[:, ~nodata].max() <= 10_000 and data[:, ~nodata].min() >= 1


def test_scl_has_clouds_cirrus_and_shadows_beside_clouds(sample) -> None:
    for path in (sample.scene_a_scl, sample.scene_b_scl):
        with rasterio.open(path) as src:
            scl = src.read(1)
        for value in (3, 8, 9, 10):
            assert (scl == value).any(), f"SCL value {value} missing"
        cloudy = np.isin(scl, (3, 8, 9, 10)).mean()
        assert 0.10 <= cloudy <= 0.40
        # Shadows touch (or lie within a few pixels of) clouds.
        near_cloud = ndimage.binary_dilation(np.isin(scl, (8, 9)), iterations=25)
        assert near_cloud[scl == 3].mean() > 0.9


def test_scenes_overlap_only_partly(sample) -> None:
    with rasterio.open(sample.scene_a) as a, rasterio.open(sample.scene_b) as b:
        ax0, ay0, ax1, ay1 = a.bounds
        bx0, by0, bx1, by1 = b.bounds
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    assert 0.2 < inter / ((ax1 - ax0) * (ay1 - ay0)) < 0.9


def test_labels_and_wetland_fraction(sample) -> None:
    with rasterio.open(sample.labels) as src:
        labels = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 255
        assert set(np.unique(labels)) <= {0, 1, 255}
    known = labels != 255
    assert 0.02 <= (labels[known] == 1).mean() <= 0.08
    # Wetlands come in connected patches, not salt-and-pepper pixels.
    patches, n = ndimage.label(labels == 1)
    assert n >= 1 and (labels == 1).sum() / n > 30


def test_wetland_inventory_matches_labels(sample) -> None:
    wetlands = gpd.read_file(sample.wetlands)
    assert wetlands.crs.to_epsg() == 32632 and (wetlands.geom_type == "Polygon").all()
    assert (wetlands["area_ha"] > 0).all()
    with rasterio.open(sample.labels) as src:
        labels, transform, shape = src.read(1), src.transform, src.shape
    burned = rasterio.features.rasterize(wetlands.geometry, out_shape=shape, transform=transform, fill=0)
    known = labels != 255
    assert (burned[known] == labels[known]).all()


def test_regions_are_named_and_geographic(sample) -> None:
    regions = gpd.read_file(sample.regions)
    assert 4 <= len(regions) <= 9
    assert regions.crs.to_epsg() == 4326
    assert regions["name"].is_unique and regions.is_valid.all()


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path) -> None:
    a = make_sample(tmp_path / "a", size=128, seed=11)
    b = make_sample(tmp_path / "b", size=128, seed=11)
    c = make_sample(tmp_path / "c", size=128, seed=12)
    for name in vars(a):
        assert filecmp.cmp(getattr(a, name), getattr(b, name), shallow=False), name
    assert not filecmp.cmp(a.scene_a, c.scene_a, shallow=False)


def test_single_pixel_index_threshold_does_not_solve_the_task(sample) -> None:
    """Wetlands mix pools and marsh at the pixel scale: NDVI/NDWI thresholds stay far from 1."""
    from wetmap.evaluate.baseline import best_index_dice

    for index, dice in best_index_dice(sample.scene_a, sample.scene_a_scl, sample.labels).items():
        assert dice < 0.7, index
