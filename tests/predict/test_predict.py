"""Multi-scene cloud-aware mosaics, output grids, polygons, Dask prediction and failure safety."""

from __future__ import annotations

import filecmp
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from conftest import run_cli
from wetmap.config import PredictConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import Grid, write_raster
from wetmap.io.windows import TileGrid
from wetmap.model.bundle import Bundle
from wetmap.predict.cluster import part_bounds, predict_part
from wetmap.predict.mosaic import predict_mosaic
from wetmap.predict.scenes import Scene

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
UTM = CRS.from_epsg(32632)
CFG = PredictConfig(tile_size=64, overlap=16, batch_size=4, device="cpu", precision="fp32")


def pointwise_bundle() -> Bundle:
    """logit = 0.1 * (B02 - 1000) / 100: each pixel's output depends on that pixel alone."""
    net = torch.nn.Conv2d(6, 1, 1)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    with torch.no_grad():
        net.weight[0, 0] = 0.1
    return Bundle(net.eval(), BANDS, ["other", "wetland"], np.full(6, 1000.0), np.full(6, 100.0),
                  {0: (236, 229, 206, 255), 1: (31, 138, 112, 255)})


def p_wetland(b02: float) -> float:
    return float(1 / (1 + np.exp(-0.1 * (b02 - 1000) / 100)))


def scene(folder: Path, name: str, x0: float, b02: np.ndarray, cloud_cols: tuple[int, int]) -> tuple[Path, Path]:
    """A 6-band scene (B02 as given, others flat) and a 0/1 cloud mask over a band of columns."""
    h, w = b02.shape
    grid = Grid(UTM, Affine(10, 0, x0, 0, -10, 5_900_000), w, h)
    bands = np.repeat(b02[None].astype(np.uint16), 6, 0)
    write_raster(folder / f"{name}.tif", bands, grid, nodata=0, descriptions=BANDS)
    cloud = np.zeros((h, w), np.uint8)
    cloud[:, cloud_cols[0]:cloud_cols[1]] = 1
    write_raster(folder / f"{name}_cloud.tif", cloud, grid, nodata=None)
    return folder / f"{name}.tif", folder / f"{name}_cloud.tif"


def test_two_scene_mosaic_takes_the_clear_scene_and_blends_by_confidence(tmp_path: Path) -> None:
    """Scene X (cols 0-199, cloud 100-159) and Y (shifted 40 px east, cloud at mosaic cols 130-199)."""
    x_img, x_cloud = scene(tmp_path, "x", 600_000, np.full((90, 200), 1500), (100, 160))
    y_img, y_cloud = scene(tmp_path, "y", 600_400, np.full((90, 200), 800), (90, 160))
    out = tmp_path / "mosaic.tif"
    result = predict_mosaic(pointwise_bundle(), [x_img, y_img], out, clouds=[x_cloud, y_cloud], cfg=CFG,
                            probabilities=True)
    with rasterio.open(out.with_name("mosaic_probability.tif")) as src:
        prob = src.read(1).astype(int)
        assert src.width == 240 and src.transform.c == 600_000, "the first scene's grid, over both scenes"
    px, py = p_wetland(1500), p_wetland(800)
    cx, cy = (max(px, 1 - px) - 0.5) * 2 + 1e-3, (max(py, 1 - py) - 0.5) * 2 + 1e-3
    blend = (cx * px + cy * py) / (cx + cy)
    expect = {(0, 40): px, (40, 100): blend, (100, 130): py, (160, 200): px, (200, 240): py}
    for (a, b), p in expect.items():
        assert (prob[:, a:b] == round(100 * p)).all(), (a, b, np.unique(prob[:, a:b]), round(100 * p))
    assert (prob[:, 130:160] == 255).all(), "cloudy in every scene: no data"
    assert result.scenes == 2 and 0.85 < result.valid_fraction < 0.9


@pytest.mark.parametrize("depth", [1, 3])
def test_batches_in_flight_change_nothing(depth: int, monkeypatch, tmp_path: Path) -> None:
    """Blending a batch while the next computes (runner.IN_FLIGHT) gives the bytes of one at a time."""
    from wetmap.predict import runner

    x_img, x_cloud = scene(tmp_path, "x", 600_000, np.linspace(500, 2500, 90 * 200).reshape(90, 200), (100, 160))
    y_img, y_cloud = scene(tmp_path, "y", 600_400, np.full((90, 200), 800), (90, 160))
    maps = []
    for n in (runner.IN_FLIGHT, depth):
        monkeypatch.setattr(runner, "IN_FLIGHT", n)
        out = tmp_path / f"inflight{n}.tif"
        predict_mosaic(pointwise_bundle(), [x_img, y_img], out, clouds=[x_cloud, y_cloud], cfg=CFG,
                       probabilities=True, overwrite=True)
        with rasterio.open(out.with_name(f"{out.stem}_probability.tif")) as src:
            maps.append(src.read())
    assert np.array_equal(*maps) and len(np.unique(maps[0])) > 10


def test_output_crs_and_resolution(tmp_path: Path) -> None:
    x_img, _ = scene(tmp_path, "x", 600_000, np.full((90, 200), 1500), (0, 0))
    out = tmp_path / "laea.tif"
    predict_mosaic(pointwise_bundle(), [x_img], out, clouds=["none"], cfg=CFG, crs="EPSG:3035",
                   resolution=20.0)
    with rasterio.open(out) as src:
        assert src.crs == CRS.from_epsg(3035) and src.res == (20.0, 20.0)
        assert src.transform.c % 20 == 0 and src.transform.f % 20 == 0, "aligned to whole pixels"
        classes = src.read(1)
    assert (classes == 1).sum() > 0.9 * (90 * 200 / 4), "the scene's area, predicted wetland"


def test_vectorize_writes_wetland_polygons_with_areas(tmp_path: Path) -> None:
    b02 = np.full((100, 120), 500)
    b02[10:40, 20:40] = 1800        # 600 px = 6 ha of wetland
    b02[70:73, 90:93] = 1800        # 9 px = 0.09 ha, below --min-area
    img, _ = scene(tmp_path, "v", 600_000, b02, (0, 0))
    out = tmp_path / "v_pred.tif"
    result = predict_mosaic(pointwise_bundle(), [img], out, clouds=["none"], cfg=CFG, vectorize=True, min_area_ha=0.5)
    polygons = gpd.read_file(result.vectors)
    assert list(polygons["area_ha"]) == [pytest.approx(6.0)]
    assert polygons.crs == UTM and polygons.geometry.iloc[0].bounds == (600_200, 5_899_600, 600_400, 5_899_900)
    # the class raster keeps its legend (OUT.qml); the polygons' style is stored in the GeoPackage,
    # in the layer_styles table that QGIS applies when it opens the layer
    assert "paletteEntry" in out.with_suffix(".qml").read_text()
    import pyogrio

    styles = pyogrio.read_dataframe(result.vectors, layer="layer_styles")
    assert list(styles["f_table_name"]) == ["wetland"] and bool(styles["useAsDefault"].iloc[0])
    assert "<qgis" in styles["styleQML"].iloc[0] and "singleSymbol" in styles["styleQML"].iloc[0]
    assert styles["f_geometry_column"].iloc[0] == pyogrio.read_info(result.vectors, layer="wetland")["geometry_name"]


def test_failed_run_leaves_no_output(tmp_path: Path) -> None:
    """A run that dies mid-way (here: the model fails on the third batch) leaves nothing behind."""
    img, _ = scene(tmp_path, "f", 600_000, np.full((200, 200), 1500), (0, 0))
    bundle = pointwise_bundle()
    inner, calls = bundle.model, []

    def failing(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return inner(x)

    bundle.model = failing  # type: ignore[assignment]
    bundle.model.to = lambda *a, **k: bundle.model  # type: ignore[attr-defined]
    bundle.model.eval = lambda: bundle.model  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="killed"):
        predict_mosaic(bundle, [img], tmp_path / "out" / "p.tif", clouds=["none"], cfg=CFG, probabilities=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def test_parts_are_whole_tile_rows_of_about_the_asked_pixels() -> None:
    tiles = TileGrid(1000, 2000, 64, 16)   # 42 tile rows of 48 x 1000 px
    for megapixels, rows in ((0.1, 2), (1.0, 20), (1e-6, 1), (1e3, 42)):
        parts = part_bounds(tiles, megapixels)
        assert parts[0] == (0, rows) and parts[-1][1] == tiles.shape[0]
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))   # contiguous, nothing twice


@pytest.mark.slow
def test_two_dask_workers_predict_the_same_bytes_as_one_process(bundle_path: Path, sample, dask_workers,
                                                                 tmp_path: Path) -> None:
    # One tile row per part: more parts (5) than may be in flight on two workers (4).
    cfg = PredictConfig(tile_size=64, overlap=16, batch_size=3, device="cpu", part_megapixels=0.01)
    local = predict_mosaic(bundle_path, [sample.scene_a, sample.scene_b], tmp_path / "one.tif",
                           clouds=[sample.scene_a_scl, sample.scene_b_scl], cfg=cfg, probabilities=True)
    spread = predict_mosaic(bundle_path, [sample.scene_a, sample.scene_b], tmp_path / "two.tif",
                            clouds=[sample.scene_a_scl, sample.scene_b_scl], cfg=cfg, probabilities=True,
                            client=dask_workers)
    for a, b in ((local.classes, spread.classes), (local.probabilities, spread.probabilities)):
        assert filecmp.cmp(a, b, shallow=False)   # overviews, tags and georeferencing too
    assert local.valid_fraction == spread.valid_fraction


def test_cli_mosaic_needs_one_mask_per_scene(monkeypatch, capsys, bundle_path: Path, sample, tmp_path: Path) -> None:
    code = run_cli(["predict", bundle_path, sample.scene_a, sample.scene_b, "--clouds", sample.scene_a_scl,
                    "-o", tmp_path / "m.tif"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "1 cloud masks for 2 scenes" in err[0]
    assert not (tmp_path / "m.tif").exists()
    code = run_cli(["predict", bundle_path, sample.scene_a, "--crs", "EPSG:nope", "-o", tmp_path / "m.tif"], monkeypatch)
    assert code == 2 and "not a CRS" in capsys.readouterr().err


def test_strip_reader_serves_exactly_the_pixels_of_each_window(tmp_path: Path) -> None:
    from wetmap.io.raster import StripReader, read_window
    from wetmap.io.windows import TileGrid

    rng = np.random.default_rng(5)
    grid = Grid(UTM, Affine(10, 0, 600_000, 0, -10, 5_900_000), 301, 283)   # not a multiple of the blocks
    write_raster(tmp_path / "r.tif", rng.integers(1, 9999, (3, 283, 301)).astype(np.uint16), grid, nodata=0,
                 blocksize=64)
    with rasterio.open(tmp_path / "r.tif") as src:
        reader = StripReader(src, [3, 1])
        for tile in TileGrid(301, 283, 100, 30):
            assert np.array_equal(reader.read(tile.window), read_window(src, tile.window, [3, 1]))
        assert len(reader.strips) <= 3, "only the strips the last window touched are kept"


def test_worker_reloads_a_bundle_retrained_at_the_same_path(bundle_path: Path, sample, tmp_path: Path) -> None:
    """Workers keep loaded models between tasks; a new bundle written over the old path is a new model."""
    path = tmp_path / "model.pt"
    payload = torch.load(bundle_path, weights_only=True)
    torch.save(payload, path)
    with rasterio.open(sample.scene_a) as src:
        grid = Grid.of(src)
    scenes, cfg = [Scene.open(sample.scene_a, sample.scene_a_scl)], PredictConfig(tile_size=64, overlap=16, device="cpu")
    rows = TileGrid(grid.width, grid.height, 64, 16).shape[0]
    _, first, _ = predict_part(str(path), scenes, grid, cfg, 0, rows)
    payload["state_dict"] = {k: torch.zeros_like(v) if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()}
    torch.save(payload, path)   # "retrained": every weight zero, so every pixel gets one class
    _, second, _ = predict_part(str(path), scenes, grid, cfg, 0, rows)
    assert len(np.unique(first[first != 255])) == 2 and len(np.unique(second[second != 255])) == 1


def test_a_predict_config_file_sets_the_outputs_and_a_flag_wins(monkeypatch, bundle_path: Path, sample,
                                                                 tmp_path: Path) -> None:
    """probabilities / vectorize / crs / resolution are PredictConfig keys: the file decides, a flag overrides."""
    cfg = tmp_path / "predict.yaml"
    cfg.write_text("probabilities: true\nvectorize: true\ncrs: EPSG:3035\nresolution: 40\n")
    out = tmp_path / "a" / "m.tif"
    assert run_cli(["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "--config", cfg,
                    "-o", out], monkeypatch) == 0
    assert out.with_name("m_probability.tif").exists() and out.with_suffix(".gpkg").exists()
    with rasterio.open(out) as src:
        assert src.crs.to_epsg() == 3035 and src.res == (40.0, 40.0)
    out = tmp_path / "b" / "m.tif"
    assert run_cli(["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "--config", cfg,
                    "--no-probabilities", "--no-vectorize", "-o", out], monkeypatch) == 0
    assert out.exists() and not out.with_name("m_probability.tif").exists() and not out.with_suffix(".gpkg").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_predicts_the_cpu_map_within_the_bf16_tolerance(bundle_path: Path, sample, tmp_path: Path) -> None:
    """CUDA (bf16 autocast, uint16 tiles pinned and normalised on the device, batches in flight)
    against the CPU in fp32: the same no data, probabilities at most 2 points apart, and classes
    equal on 99.9 % of clear pixels (README: bf16's stated tolerance)."""
    maps = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "auto")):
        cfg = PredictConfig(tile_size=64, overlap=16, batch_size=4, device=device, precision=precision)
        result = predict_mosaic(bundle_path, [sample.scene_a], tmp_path / f"{device}.tif", clouds=[sample.scene_a_scl],
                                cfg=cfg, probabilities=True)
        with rasterio.open(result.classes) as cls, rasterio.open(result.probabilities) as prob:
            maps[device] = (cls.read(1), prob.read(1).astype(int))
    (cpu_cls, cpu_p), (gpu_cls, gpu_p) = maps["cpu"], maps["cuda"]
    clear = cpu_cls != 255
    assert np.array_equal(clear, gpu_cls != 255) and clear.mean() > 0.3
    assert np.abs(cpu_p - gpu_p)[clear].max() <= 2
    assert (cpu_cls == gpu_cls)[clear].mean() >= 0.999


def test_a_strip_lost_on_the_way_to_disk_fails_the_run(monkeypatch, tmp_path: Path) -> None:
    """GDAL may lose a block while flushing its cache and only log it; the strip file then reads
    back as no data there, without an error. The COG must hold what was written, so the run fails
    (one line, naming the map) and leaves nothing."""
    from wetmap.io import cog
    from wetmap.predict import mosaic

    img, _ = scene(tmp_path, "l", 600_000, np.full((200, 200), 1500), (0, 0))
    writes: list[int] = []

    def losing(dst, row: int, data: np.ndarray) -> None:
        writes.append(row)
        if len(writes) != 2:   # the second strip of the class map never reaches the file
            cog.write_strip(dst, row, data)

    monkeypatch.setattr(mosaic, "write_strip", losing)
    out = tmp_path / "out" / "p.tif"
    with pytest.raises(WetmapError, match=r"p\.tif: was not written completely .* pixels differ"):
        predict_mosaic(pointwise_bundle(), [img], out, clouds=["none"], cfg=CFG)
    assert sorted(p.name for p in out.parent.iterdir()) == []
