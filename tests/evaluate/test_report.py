"""Regional reports against brute force: every count recomputed per region with plain numpy."""

from __future__ import annotations

import json
import math
import xml.dom.minidom
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from conftest import run_cli
from wetmap.evaluate import tally as tally_module
from wetmap.evaluate.report import evaluate
from wetmap.io.raster import Grid, write_raster

UTM = CRS.from_epsg(32632)
GRID = Grid(UTM, Affine(10.0, 0, 500_000.0, 0, -10.0, 5_500_000.0), 300, 260)
CLOUD_BOX = (500_100.0, 5_497_700.0, 500_900.0, 5_498_300.0)   # x0, y0, x1, y1 in UTM


def utm_box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    return shapely.box(x0, y0, x1, y1)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    """Prediction, truth and cloud mask on a UTM grid; regions in EPSG:4326 of every awkward kind."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(7)
    truth = (rng.random((GRID.height, GRID.width)) < 0.1).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.8, truth, 1 - truth).astype(np.uint8)
    pred[:20, :] = 255                       # a no-data strip along the top
    truth[-15:, :40] = 255                   # truth unknown in a corner
    cloud = rasterio.features.geometry_mask([utm_box(*CLOUD_BOX)], truth.shape, GRID.transform, invert=True)
    pred[cloud] = 255                        # predict writes nodata under clouds
    paths = {name: root / f"{name}.tif" for name in ("pred", "truth", "clouds")}
    write_raster(paths["pred"], pred, GRID, nodata=255, tags={"CLASSES": "other,wetland"})
    write_raster(paths["truth"], truth, GRID, nodata=255)
    write_raster(paths["clouds"], cloud.astype(np.uint8), GRID, nodata=None)
    west, north = 500_000.0, 5_500_000.0
    regions = gpd.GeoDataFrame({"name": ["west", "east", "overlap", "half out", "outside", "clouded"]}, geometry=[
        utm_box(west + 5, north - 2_500, west + 1_505, north - 5),          # most of the west half
        utm_box(west + 1_495, north - 2_600, west + 3_000, north - 5),      # east half, touching the west one
        utm_box(west + 1_000, north - 1_800, west + 2_200, north - 800),    # overlaps both
        utm_box(west + 2_500, north - 1_000, west + 3_500, north - 200),    # half beyond the east edge
        utm_box(west + 5_000, north - 1_000, west + 6_000, north - 200),    # off the raster
        utm_box(*CLOUD_BOX).buffer(-50),                                    # fully under the cloud
    ], crs=UTM).to_crs(4326)
    paths["regions"] = root / "regions.gpkg"
    regions.to_file(paths["regions"], driver="GPKG")
    return paths


def brute_force(pred: np.ndarray, truth: np.ndarray, clear: np.ndarray, regions: Path, k: int) -> dict[str, dict]:
    """Per region and class: TP/FP/FN/TN over centre-inside pixels that are usable and known."""
    gdf = gpd.read_file(regions).to_crs(UTM)
    out = {}
    for name, geom in zip(gdf["name"], gdf.geometry):
        inside = rasterio.features.geometry_mask([geom], pred.shape, GRID.transform, invert=True)
        usable = inside & (pred < k) & clear
        ok = usable & (truth < k)
        counts = {}
        for c in range(k):
            p, t = pred[ok] == c, truth[ok] == c
            counts[c] = [int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum()), int((~p & ~t).sum())]
        out[name] = {"counts": counts, "pixels": int(inside.sum()), "masked": int((inside & ~((pred < k) & clear)).sum()),
                     "valid": int(ok.sum())}
    return out


def read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("block", [64, 1024])
def test_counts_match_brute_force_per_region(scene, tmp_path: Path, monkeypatch, block: int) -> None:
    """Regions in EPSG:4326 over a UTM raster, one off the raster, one half out, one under a cloud,
    overlapping ones; blocks smaller than the raster (64) and larger (1024) count the same."""
    monkeypatch.setattr(tally_module, "BLOCK", block)
    rep = evaluate(scene["pred"], scene["truth"], scene["regions"], tmp_path / "r", clouds=scene["clouds"])
    clear = read(scene["clouds"]) == 0
    expected = brute_force(read(scene["pred"]), read(scene["truth"]), clear, scene["regions"], 2)
    rows = {r["name"]: r for r in rep.report["regions"]}
    assert list(rows) == list(expected)
    for name, e in expected.items():
        r = rows[name]
        assert [r["tp"], r["fp"], r["fn"], r["tn"]] == e["counts"][1], name
        assert [r["per_class"]["other"][key] for key in ("tp", "fp", "fn", "tn")] == e["counts"][0], name
        if e["pixels"]:
            assert math.isclose(r["valid_fraction"], e["valid"] / e["pixels"])
            assert math.isclose(r["cloud_fraction"], e["masked"] / e["pixels"])
        tp, fp, fn, _ = e["counts"][1]
        if tp + fp + fn:
            assert math.isclose(r["dice"], 2 * tp / (2 * tp + fp + fn))
            assert math.isclose(r["iou"], tp / (tp + fp + fn))
        assert math.isclose(r["pred_area_ha"], (tp + fp) * 0.01) and math.isclose(r["ref_area_ha"], (tp + fn) * 0.01)
    assert rows["outside"]["dice_undefined"] and rows["outside"]["covered_fraction"] == 0.0
    assert rows["clouded"]["dice_undefined"] and rows["clouded"]["cloud_fraction"] == 1.0
    assert 0.45 < rows["half out"]["covered_fraction"] < 0.55
    assert rows["west"]["covered_fraction"] == pytest.approx(1.0)
    # overlapping regions each count their shared pixels: the sum exceeds the pixels of the union
    assert rows["overlap"]["tn"] > 0 and sum(r["tp"] + r["fn"] for r in rows.values()) > 0
    total = [sum(e["counts"][1][i] for e in expected.values()) for i in range(4)]
    assert list(rep.report["overall"]["counts"].values()) == total
    tp, fp, fn, _ = total
    assert math.isclose(rep.report["overall"]["micro"]["dice"], 2 * tp / (2 * tp + fp + fn))
    assert rep.micro.dice == rep.report["overall"]["micro"]["dice"] and rep.class_name == "wetland"
    np.testing.assert_equal([(r.name, r.scores.dice) for r in rep.regions],
                            [(r["name"], r["dice"]) for r in rep.report["regions"]])   # NaN equals NaN here
    defined = [r["dice"] for r in rows.values() if not r["dice_undefined"]]
    assert math.isclose(rep.report["overall"]["macro"]["dice"], float(np.mean(defined)))


def test_report_files_are_complete_and_undefined_is_null(scene, tmp_path: Path) -> None:
    out = tmp_path / "r"
    evaluate(scene["pred"], scene["truth"], scene["regions"], out, clouds=scene["clouds"])
    saved = json.loads((out / "report.json").read_text())
    assert saved["overall"]["micro"]["dice"] is not None and saved["overall"]["macro"]["dice"] is not None
    outside = next(r for r in saved["regions"] if r["name"] == "outside")
    assert outside["dice"] is None and outside["dice_undefined"] is True
    assert set(outside) >= {"name", "tp", "fp", "fn", "tn", "dice", "iou", "precision", "recall", "pred_area_ha",
                            "ref_area_ha", "valid_fraction", "cloud_fraction", "covered_fraction"}
    gdf = gpd.read_file(out / "regions.gpkg")
    assert list(gdf["name"]) == [r["name"] for r in saved["regions"]]
    assert gdf["dice"].dtype == np.float64 and gdf.loc[gdf["name"] == "outside", "dice"].isna().all()
    assert gdf.crs == UTM
    style = xml.dom.minidom.parse(str(out / "regions.qml"))
    rules = style.getElementsByTagName("rule")
    assert any('"dice" IS NULL' in r.getAttribute("filter") for r in rules) and len(rules) == 6
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "clouded" in page and "undefined" in page
    md = (out / "report.md").read_text()
    assert "![" in md and "| half out |" in md
    for png in ("map.png", "dice_by_region.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*tmp*")), "no temporary file left behind"


def test_multiclass_maps_are_scored_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, (GRID.height, GRID.width)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.7, truth, rng.integers(0, 3, truth.shape)).astype(np.uint8)
    pred[:5] = 255
    write_raster(tmp_path / "p.tif", pred, GRID, nodata=255, tags={"CLASSES": "other,wetland,water"})
    write_raster(tmp_path / "t.tif", truth, GRID, nodata=255)
    regions = gpd.GeoDataFrame({"name": ["a", "b"]}, geometry=[utm_box(500_000, 5_498_000, 501_500, 5_500_000),
                                                                utm_box(501_000, 5_497_400, 503_000, 5_499_000)], crs=UTM)
    regions.to_file(tmp_path / "regions.gpkg")
    rep = evaluate(tmp_path / "p.tif", tmp_path / "t.tif", tmp_path / "regions.gpkg", tmp_path / "r")
    expected = brute_force(pred, truth, np.ones_like(pred, bool), tmp_path / "regions.gpkg", 3)
    assert rep.report["classes"] == ["other", "wetland", "water"] and rep.report["class"] == "wetland"
    for r in rep.report["regions"]:
        for c, name in enumerate(rep.report["classes"]):
            got = r["per_class"][name]
            assert [got[key] for key in ("tp", "fp", "fn", "tn")] == expected[r["name"]]["counts"][c]
    assert "water_dice" in (tmp_path / "r" / "regions.csv").read_text().splitlines()[0]
    assert set(rep.report["overall"]["per_class"]) == {"other", "wetland", "water"}


def test_cli_refuses_to_replace_a_report_and_names_bad_field(scene, tmp_path: Path, monkeypatch, capsys) -> None:
    args = ["evaluate", scene["pred"], scene["truth"], "--regions", scene["regions"], "-o", tmp_path / "r"]
    assert run_cli(args, monkeypatch) == 0
    assert run_cli(args, monkeypatch) == 2
    assert "output exists" in capsys.readouterr().err
    assert run_cli([*args, "--overwrite", "--region-field", "nope"], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no field 'nope'" in err[0] and "regions.gpkg" in err[0]


def test_areas_are_true_hectares_in_degrees_and_in_web_mercator(tmp_path: Path) -> None:
    """A map in EPSG:4326 at 60 N: its pixels are about half as wide on the ground as they are
    tall, and areas were square degrees (0.0 ha). Now: the rectangle's ellipsoidal area."""
    from pyproj import Geod

    from wetmap.io.areas import PixelArea
    from wetmap.predict.vectorize import vectorize_classes

    grid = Grid(CRS.from_epsg(4326), Affine(0.001, 0, 10.0, 0, -0.001, 60.1), 200, 200)
    pred = np.zeros((200, 200), np.uint8)
    pred[50:150, 20:120] = 1                         # 0.1 x 0.1 degrees of wetland
    write_raster(tmp_path / "pred.tif", pred, grid, nodata=255, tags={"CLASSES": "other,wetland"})
    write_raster(tmp_path / "truth.tif", pred, grid, nodata=255)
    gpd.GeoDataFrame({"name": ["all"]}, geometry=[shapely.box(*grid.bounds)], crs=4326).to_file(tmp_path / "r.gpkg")
    rep = evaluate(tmp_path / "pred.tif", tmp_path / "truth.tif", tmp_path / "r.gpkg", tmp_path / "rep")

    west, north = 10.0 + 20 * 0.001, 60.1 - 50 * 0.001
    lons = np.r_[np.linspace(west, west + 0.1, 101), np.linspace(west + 0.1, west, 101)]
    lats = np.r_[np.full(101, north), np.full(101, north - 0.1)]   # parallels, densified
    true_ha = abs(Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)[0]) / 10_000
    assert rep.report["regions"][0]["pred_area_ha"] == pytest.approx(true_ha, rel=1e-4)
    assert rep.report["overall"]["ref_area_ha"] == pytest.approx(true_ha, rel=1e-4)
    assert rep.report["pixel_area_ha"] is None and "ellipsoid" in rep.report["area_method"]
    polygons = vectorize_classes(tmp_path / "pred.tif", tmp_path / "p.gpkg", 1, "wetland")
    assert polygons["area_ha"].sum() == pytest.approx(true_ha, rel=1e-4)

    mercator = Grid(CRS.from_epsg(3857), Affine(10, 0, 1_113_195, 0, -10, 8_399_738), 100, 100)  # 10 m at 60 N
    area = PixelArea(mercator)
    assert area.nominal is None and area.of(Window(0, 0, 100, 100)) == pytest.approx(0.01 * 0.25, rel=0.01)
    utm = Grid(CRS.from_epsg(32632), Affine(10, 0, 500_000, 0, -10, 6_000_000), 100, 100)
    assert PixelArea(utm).nominal == pytest.approx(0.01, rel=1e-12)
