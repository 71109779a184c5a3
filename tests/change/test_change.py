"""Change between two class maps: the change raster, the per-region hectares and the polygons
against brute-force counts on maps made by construction; cloudy pixels are never change."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS

from wetmap.change import compare_runs
from wetmap.change.raster import GAINED, LOST, STABLE_OTHER, STABLE_WETLAND
from wetmap.errors import WetmapError

H, W = 100, 120
TRANSFORM = Affine(10, 0, 500_000, 0, -10, 6_000_000)
CRS_UTM = CRS.from_epsg(32633)
PIXEL_HA = 0.01


def write_map(path: Path, data: np.ndarray, classes: str = "other,wetland", transform: Affine = TRANSFORM) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype="uint8",
                       crs=CRS_UTM, transform=transform, nodata=255) as dst:
        dst.write(data, 1)
        dst.update_tags(CLASSES=classes)
    return path


@pytest.fixture()
def maps(tmp_path: Path) -> dict[str, object]:
    """A previous and a current map: wetland A removed, C added, B kept, salt flips in both,
    and a cloud in each run (over part of C in the previous one, part of B in the current)."""
    rng = np.random.default_rng(7)
    before = np.zeros((H, W), np.uint8)
    before[10:40, 10:40] = 1          # A
    before[60:90, 50:80] = 1          # B
    now = before.copy()
    now[10:40, 10:40] = 0             # A drained
    now[10:40, 70:100] = 1            # C flooded
    for layer in (before, now):
        flip = rng.random((H, W)) < 0.02
        layer[flip] = 1 - layer[flip]
    before[0:20, 60:120] = 255        # cloud in the previous run, over part of C
    now[80:100, 0:60] = 255           # cloud in the current run, over part of B
    regions = gpd.GeoDataFrame(
        {"name": ["west", "east", "triangle", "half outside"]},
        geometry=[shapely.box(500_000, 5_999_000, 500_600, 6_000_000),
                  shapely.box(500_600, 5_999_000, 501_200, 6_000_000),
                  shapely.Polygon([(500_105, 5_999_895), (500_905, 5_999_905), (500_455, 5_999_205)]),
                  shapely.box(501_000, 5_999_500, 501_500, 6_000_300)], crs=CRS_UTM)
    regions.to_file(tmp_path / "regions.gpkg", driver="GPKG", engine="pyogrio")
    return {"before": before, "now": now, "previous": write_map(tmp_path / "previous.tif", before),
            "current": write_map(tmp_path / "current.tif", now), "regions": tmp_path / "regions.gpkg",
            "frame": regions}


def brute_codes(before: np.ndarray, now: np.ndarray) -> np.ndarray:
    out = np.full(before.shape, 255, np.uint8)
    clear = (before != 255) & (now != 255)
    out[clear & (before == 0) & (now == 0)] = STABLE_OTHER
    out[clear & (before == 1) & (now == 1)] = STABLE_WETLAND
    out[clear & (before == 0) & (now == 1)] = GAINED
    out[clear & (before == 1) & (now == 0)] = LOST
    return out


def test_change_raster_and_region_hectares_match_a_brute_force_count(maps, tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "report").mkdir(parents=True)
    report = out / "report" / "report.html"
    report.write_text("<html><body><h1>report</h1><h2>Inputs</h2><ul></ul></body></html>")
    earlier = [("2025-12-01", [{"name": "west", "wetland_ha": 20.0, "clear_fraction": 0.3}])]
    result = compare_runs(maps["current"], maps["previous"], "2026-01-01", maps["regions"], out,
                          series=earlier, report=report)
    before, now = maps["before"], maps["now"]
    expected = brute_codes(before, now)
    with rasterio.open(out / "change.tif") as src:
        change = src.read(1)
        assert src.crs == CRS_UTM and src.transform == TRANSFORM and src.nodata == 255
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.overviews(1)
    assert np.array_equal(change, expected)
    cloudy = (before == 255) | (now == 255)
    assert cloudy.any() and (change[cloudy] == 255).all()   # never gained or lost through a cloud
    for row, geom in zip(result.regions, maps["frame"].geometry):
        inside = rasterio.features.geometry_mask([geom], (H, W), TRANSFORM, invert=True)   # pixel centres
        n = int(inside.sum())
        both = inside & ~cloudy
        assert row.wetland_ha == pytest.approx(((now == 1) & inside).sum() * PIXEL_HA, abs=1e-9)
        assert row.clear_fraction == pytest.approx(((now != 255) & inside).sum() / n)
        assert row.previous_wetland_ha == pytest.approx(((before == 1) & inside).sum() * PIXEL_HA, abs=1e-9)
        assert row.previous_clear_fraction == pytest.approx(((before != 255) & inside).sum() / n)
        assert row.gained_ha == pytest.approx((both & (before == 0) & (now == 1)).sum() * PIXEL_HA, abs=1e-9)
        assert row.lost_ha == pytest.approx((both & (before == 1) & (now == 0)).sum() * PIXEL_HA, abs=1e-9)
        assert row.compared_fraction == pytest.approx(both.sum() / n)
    west, east = result.regions[0], result.regions[1]
    assert west.lost_ha > 5 and east.gained_ha > 5     # A drained in the west, C flooded in the east
    polygons = {layer: gpd.read_file(out / "change.gpkg", layer=layer) for layer in ("gained", "lost")}
    assert polygons["gained"]["area_ha"].sum() == pytest.approx((expected == GAINED).sum() * PIXEL_HA)
    assert polygons["lost"]["area_ha"].sum() == pytest.approx((expected == LOST).sum() * PIXEL_HA)
    table = json.loads((out / "change.json").read_text())
    assert table["previous"] == "2026-01-01" and [r["name"] for r in table["regions"]] == list(maps["frame"]["name"])
    assert (out / "change.csv").read_text().splitlines()[0].startswith("name,wetland_ha,clear_fraction")
    page = (out / "change.html").read_text()
    assert "Since run 2026-01-01" in page and page.count("data:image/png;base64,") == 2
    amended = report.read_text()
    assert amended.index("<h2>Change</h2>") < amended.index("<h2>Inputs</h2>") and "Since run 2026-01-01" in amended
    for name in ("change_map.png", "wetland_by_run.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    qml = (out / "change.qml").read_text()
    assert 'label="gained"' in qml and 'label="lost"' in qml and 'min="255" max="255" percentTransparent="100"' in qml


def test_a_strip_lost_on_the_way_to_disk_fails_the_comparison(maps, monkeypatch, tmp_path: Path) -> None:
    """The change raster must hold the codes written, not what its working file read back (a block
    GDAL lost while flushing reads back as no data, without an error)."""
    from wetmap.change import raster

    monkeypatch.setattr(raster, "write_strip", lambda dst, row, data: None)   # the strip never reaches the file
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(WetmapError, match=r"change\.tif: was not written completely .* pixels differ"):
        compare_runs(maps["current"], maps["previous"], "2026-01-01", maps["regions"], out)
    assert not (out / "change.tif").exists()


def test_a_first_run_writes_its_own_areas_and_no_change_layers(maps, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    result = compare_runs(maps["current"], None, None, maps["regions"], out, not_compared="the job's first run")
    assert not (out / "change.tif").exists() and not (out / "change.gpkg").exists()
    assert all(r.gained_ha is None and r.wetland_ha >= 0 for r in result.regions)
    assert json.loads((out / "change.json").read_text())["not_compared"] == "the job's first run"


def test_maps_of_other_classes_are_not_compared(maps, tmp_path: Path) -> None:
    other = write_map(tmp_path / "three.tif", maps["before"].clip(0, 2), "other,water,marsh")
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(WetmapError, match="only measured between maps of the same classes"):
        compare_runs(maps["current"], other, "2026-01-01", maps["regions"], out)
    assert not any(out.iterdir())   # nothing half-written


def test_a_previous_run_on_another_grid_is_compared_on_the_new_one(maps, tmp_path: Path) -> None:
    """A 20 m previous map (another resolution of the job) is put onto the 10 m grid by nearest
    neighbour: each 20 m cell stands for its four 10 m pixels."""
    coarse = maps["before"][::2, ::2]
    previous = write_map(tmp_path / "coarse.tif", coarse, transform=TRANSFORM * Affine.scale(2))
    out = tmp_path / "run"
    out.mkdir()
    compare_runs(maps["current"], previous, "2026-01-01", maps["regions"], out)
    with rasterio.open(out / "change.tif") as src:
        assert src.shape == (H, W)
        change = src.read(1)
    assert np.array_equal(change, brute_codes(np.repeat(np.repeat(coarse, 2, 0), 2, 1), maps["now"]))


def test_the_area_chart_has_a_point_per_run_and_hollow_marks_for_cloudy_runs() -> None:
    from wetmap.change.pages import area_chart

    series = [("2026-01-01", [{"name": "west", "wetland_ha": 10.0, "clear_fraction": 0.9}]),
              ("2026-02-01", [{"name": "west", "wetland_ha": 4.0, "clear_fraction": 0.2}]),
              ("this run", [{"name": "west", "wetland_ha": 11.0, "clear_fraction": 0.95}])]
    ax = area_chart(series).axes[0]
    line, hollow = ax.lines
    assert list(line.get_ydata()) == [10.0, 4.0, 11.0] and list(hollow.get_xdata()) == [1]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2026-01-01", "2026-02-01", "this run"]
