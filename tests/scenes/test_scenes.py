"""Real scenes in: every product form predicts and tiles exactly as its hand-made stacked GeoTIFF.

Products are built in the real layouts from the sample scene (tests/products.py); where
../shared/realdata is present, the real product metadata and layouts are read as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

import products
from conftest import run_cli
from wetmap import config
from wetmap.bands import canonical, landsat_bands
from wetmap.chips.build import build_chip_store
from wetmap.chips.store import open_chip_store
from wetmap.config import PredictConfig
from wetmap.errors import WetmapError, WetmapWarning
from wetmap.io.paths import gdal_path, is_remote
from wetmap.model.bundle import load_bundle
from wetmap.predict.mosaic import predict_mosaic
from wetmap.scenes import open_scene
from wetmap.scenes.landsat import read_mtl

REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.is_dir(), reason="../shared/realdata is not here")
CFG = PredictConfig(tile_size=64, overlap=16, batch_size=8, device="cpu", precision="fp32")


def pixels(path: Path) -> tuple[bytes, object, object]:
    with rasterio.open(path) as src:
        return src.read().tobytes(), src.crs, src.transform


def predicted(bundle, scene, out: Path, clouds=None, **options) -> tuple[bytes, bytes]:
    result = predict_mosaic(bundle, [scene], out, clouds=[clouds], cfg=CFG, probabilities=True, **options)
    cls, prob = pixels(result.classes), pixels(result.probabilities)
    assert cls[1:] == prob[1:]
    return cls[0], prob[0]


@pytest.fixture(scope="module")
def built(sample, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Every product form of the sample scene, with its stacked reference."""
    root = tmp_path_factory.mktemp("products")
    safe, reference = products.make_safe(root / "l2a", sample)
    out = {"safe": (safe, reference), "zip": (products.zip_safe(safe), reference)}
    out["safe-02"] = products.make_safe(root / "l2a-02", sample, baseline="02.14")
    out["l1c"] = products.make_safe(root / "l1c", sample, level="L1C", baseline="04.00")
    out["landsat"] = products.make_landsat(root / "landsat", sample)
    out["landsat-json"] = products.make_landsat(root / "landsat-json", sample, mtl="json")
    out["stac-pc"] = (products.stac_item(root / "l2a" / "item-pc.json", safe, "pc"), reference)
    out["stac-es"] = (products.stac_item(root / "l2a" / "item-es.json", safe, "earthsearch"), reference)
    out["bands"] = products.band_folder(root, sample)
    out["bands-esa"] = products.band_folder(root, sample, naming="esa")
    return out


def reference_mask(form: str, built: dict[str, tuple[Path, Path]]) -> str | None:
    """The cloud mask a user passes with the hand-made stack: the product's own file."""
    if form in ("safe", "zip", "stac-pc", "stac-es"):
        return str(next(built["safe"][0].rglob("*_SCL_20m.jp2")))
    product = built[form][0]
    if form == "safe-02":
        return str(next(product.rglob("*_SCL_20m.jp2")))
    if form.startswith("landsat"):
        return str(next(product.glob("*_QA_PIXEL.TIF")))
    return None


# --- names and paths --------------------------------------------------------------------------------

def test_band_aliases() -> None:
    assert [canonical(n) for n in ("B2", "B02", "b02", "blue", "B8", "B8A", "b8a", "nir", "nir08", "swir16",
                                   "swir22", "B12")] == \
        ["B02", "B02", "B02", "B02", "B08", "B8A", "B8A", "B08", "B8A", "B11", "B12", "B12"]
    assert canonical("B13") is None and canonical("rededge") is None and canonical("") is None
    assert landsat_bands("LANDSAT_8")[5] == "B8A" and landsat_bands("LC09")[6] == "B11"
    assert landsat_bands("LANDSAT_5")[4] == "B08" and landsat_bands("LE07")[7] == "B12"


def test_remote_paths_reach_gdal_unchanged() -> None:
    assert gdal_path("s3://bucket/a/b.tif") == "/vsis3/bucket/a/b.tif"
    assert gdal_path("gs://bucket/b.tif") == "/vsigs/bucket/b.tif"
    assert gdal_path("https://host/x/b.tif") == "/vsicurl/https://host/x/b.tif"
    assert gdal_path("/vsicurl/https://host/b.tif") == "/vsicurl/https://host/b.tif"
    assert gdal_path("/data/b.tif") == "/data/b.tif"
    assert is_remote("s3://b/k") and is_remote("/vsicurl/http://h/x") and not is_remote("/data/x.tif")
    assert not is_remote("/vsizip//data/x.zip/a.jp2")


# --- the core property: a product predicts as its stack ----------------------------------------------

@pytest.mark.parametrize("form", ["safe", "zip", "safe-02", "l1c", "landsat", "landsat-json", "stac-pc",
                                  "stac-es", "bands", "bands-esa"])
def test_product_predicts_exactly_as_its_stacked_geotiff(form, built, bundle_path, tmp_path) -> None:
    product, reference = built[form]
    bundle = load_bundle(bundle_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WetmapWarning)   # the Landsat NIR substitution is reported
        mask = reference_mask(form, built)
        # the product's own mask where it has one (auto); else none, as for its stacked reference
        got = predicted(bundle, product, tmp_path / "product.tif", clouds=None if mask else "none")
        want = predicted(bundle, reference, tmp_path / "stacked.tif", clouds=mask or "none")
    assert got == want
    classes = np.frombuffer(got[0], np.uint8)
    assert ((classes == 0) | (classes == 1)).mean() > 0.3   # a real map, not all no data
    if mask is not None:   # the product's own mask was used: masking it off changes the map
        unmasked = predicted(bundle, product, tmp_path / "unmasked.tif", clouds="none")
        assert unmasked[0] != got[0]


def test_product_tiles_exactly_as_its_stacked_geotiff(built, sample, tmp_path) -> None:
    product, reference = built["safe"]
    mask = reference_mask("safe", built)
    stores = []
    for name, image, clouds in (("product", product, None), ("stacked", reference, mask)):
        cfg = config.build(config.TileConfig, {"image": str(image), "labels": str(sample.labels), "size": 64,
                                               "overlap": 0, "min_valid": 0.3, "clouds": clouds,
                                               "split": {"block": 128, "val": 0.25, "test": 0.0}})
        build_chip_store(cfg, tmp_path / name)
        stores.append(open_chip_store(tmp_path / name))
    a, b = stores
    assert a.image.dtype == np.float32
    for array in ("image", "label", "valid"):
        assert getattr(a, array)[:].tobytes() == getattr(b, array)[:].tobytes()
    assert a.meta["stats"] == b.meta["stats"]
    assert a.index.drop(columns="geometry").equals(b.index.drop(columns="geometry"))
    assert a.meta["scene"]["level"] == "L2A" and "SCL" in a.meta["inputs"]["clouds"]


@pytest.mark.parametrize("form", ["safe", "landsat"])
def test_prediction_reads_products_as_they_are_and_rescales_them_as_read_does(form, built) -> None:
    """Prediction's tiles stay uint16 (half the bytes of float32 on their way to a GPU); their
    rescaling, applied as TilePredictor applies it, gives read()'s reflectance bit for bit."""
    from rasterio.windows import Window

    from wetmap.scenes.reader import SceneReader, scene_grid

    bands = open_scene(built[form][0]).select(products.MODEL_BANDS)
    with SceneReader(bands, scene_grid(bands), strips=True) as reader:
        assert reader.raw_dtype == np.uint16 and reader.rescale is not None
        window = Window(0, 0, reader.grid.width, reader.grid.height)
        raw, ok = reader.read_raw(window)
        want, want_ok = reader.read(window)
    assert raw.dtype == np.uint16 and np.array_equal(ok, want_ok) and not ok.all()
    x = raw.astype(np.float32)
    x *= reader.rescale.scale[:, None, None]
    x += reader.rescale.offset[:, None, None]
    assert np.array_equal(x[:, ok], want[:, ok])


@pytest.mark.parametrize("form", ["safe", "landsat", "float-stack"])
def test_what_a_gpu_is_sent_predicts_the_same_map(form, built, bundle_path, tmp_path, monkeypatch) -> None:
    """The files' own values, rescaled by the predictor (a GPU's path), run here on the CPU: the
    bytes of the float32 reflectance the CPU's reader thread makes. "float-stack": a float32
    stack with NaN no data, whose NaN must not reach the network."""
    from wetmap.predict import runner
    from wetmap.scenes.reader import SceneReader

    bundle = load_bundle(bundle_path)
    image, clouds = (built["safe"][1], "none") if form == "float-stack" else (built[form][0], None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WetmapWarning)
        want = predicted(bundle, image, tmp_path / "float.tif", clouds=clouds)
        raw_reads = []
        read_raw = SceneReader.read_raw
        monkeypatch.setattr(SceneReader, "read_raw", lambda self, w: raw_reads.append(w) or read_raw(self, w))
        monkeypatch.setattr(runner, "RAW_DEVICES", ("cuda", "cpu"))
        got = predicted(bundle, image, tmp_path / "raw.tif", clouds=clouds)
    assert raw_reads and got == want


def test_cli_predict_and_tile_take_a_safe_zip(built, sample, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    archive, _ = built["zip"]
    assert run_cli(["predict", bundle_path, archive, "-o", tmp_path / "map.tif", "--tile-size", "64",
                    "--overlap", "16", "--set", "device=cpu"], monkeypatch) == 0
    printed = capsys.readouterr().out
    assert "Sentinel-2 SAFE, L2A" in printed and "SCL (from the product" in printed and "DN -1000" in printed
    with rasterio.open(tmp_path / "map.tif") as src:
        assert "SCL (from the product" in src.tags()["CLOUD_MASKS"]
        assert src.tags()["REFLECTANCE"] == "reflectance x 10000, offsets removed"
    assert run_cli(["tile", "--image", archive, "--labels", sample.labels, "-o", tmp_path / "chips", "--size", "64",
                    "--min-valid", "0.3", "--set", "split.block=128", "--set", "split.test=0"], monkeypatch) == 0
    assert "clouds: SCL (from the product" in capsys.readouterr().out


def test_training_on_the_fly_from_a_product_records_its_level(built, sample, tmp_path) -> None:
    from wetmap.train.fit import fit

    product, _ = built["safe"]
    cfg = config.build(config.TrainRunConfig, {
        "data": {"image": str(product), "labels": str(sample.labels), "chip_size": 64, "split_block": 1},
        "train": {"epochs": 1, "batch_size": 8}, "output": str(tmp_path / "run")})
    bundle = load_bundle(fit(cfg).bundle)
    assert bundle.scene["level"] == "L2A" and bundle.scene["convention"] == "reflectance x 10000, offsets removed"
    l1c, _ = built["l1c"]
    with pytest.warns(WetmapWarning, match="scene is L1C, the model was trained on L2A"):
        predict_mosaic(bundle, [l1c], tmp_path / "l1c.tif", cfg=CFG)


# --- refusals ---------------------------------------------------------------------------------------

def test_float_reflectance_0_1_is_refused_unless_forced(sample, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    with rasterio.open(sample.scene_a) as src:
        profile, data = src.profile, src.read()
    profile.update(dtype="float32", nodata=0.0)
    unit = tmp_path / "unit.tif"
    with rasterio.open(unit, "w", **profile) as dst:
        dst.write(data.astype(np.float32) / 10000)
        dst.descriptions = tuple(products.MODEL_BANDS)
    args = ["predict", bundle_path, unit, "-o", tmp_path / "out.tif", "--clouds", "none", "--set", "device=cpu",
            "--tile-size", "64", "--overlap", "16"]
    assert run_cli(args, monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unit.tif" in err and "band B02" in err and "--force" in err
    assert not (tmp_path / "out.tif").exists()
    assert run_cli([*args, "--force"], monkeypatch) == 0


def test_bands_names_an_undescribed_files_bands(sample, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    with rasterio.open(sample.scene_a) as src:
        profile, data = src.profile, src.read()
    bare = tmp_path / "bare.tif"
    with rasterio.open(bare, "w", **profile) as dst:
        dst.write(data)
    base = ["predict", bundle_path, bare, "--set", "device=cpu", "--tile-size", "64", "--overlap", "16"]
    assert run_cli([*base, "-o", tmp_path / "a.tif"], monkeypatch) == 2
    err = capsys.readouterr().err
    assert "bands present: 1,2,3,4,5,6" in err and "--bands" in err
    assert run_cli([*base, "-o", tmp_path / "b.tif", "--bands", "blue,green,red,nir,swir16,swir22",
                    "--clouds", sample.scene_a_scl], monkeypatch) == 0
    assert run_cli(["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, "-o", tmp_path / "c.tif",
                    "--set", "device=cpu", "--tile-size", "64", "--overlap", "16"], monkeypatch) == 0
    assert pixels(tmp_path / "b.tif") == pixels(tmp_path / "c.tif")
    assert run_cli([*base, "-o", tmp_path / "d.tif", "--bands", "B02,B03"], monkeypatch) == 2
    assert "names 2 bands, the file has 6" in capsys.readouterr().err


def test_a_band_the_scene_lacks_is_one_line(built, bundle_path, tmp_path, monkeypatch, capsys) -> None:
    safe, _ = built["safe"]
    (next(safe.rglob("*_B11_20m.jp2"))).rename(tmp_path / "moved.jp2")
    try:
        assert run_cli(["predict", bundle_path, safe, "-o", tmp_path / "x.tif"], monkeypatch) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "missing" in err and "B11_20m" in err
    finally:
        (tmp_path / "moved.jp2").rename(next(safe.rglob("R20m")) / f"{products.TILE}_{products.DATATAKE}_B11_20m.jp2")


# --- remote scenes ----------------------------------------------------------------------------------

@pytest.fixture()
def served(built) -> str:
    """The Earth Search-style item and its SAFE, served over HTTP on 127.0.0.1."""
    safe, _ = built["safe"]
    range_server = Path(__file__).resolve().parents[1] / "range_server.py"
    server = subprocess.Popen([sys.executable, str(range_server), str(safe.parent)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_scenes_over_http_predict_as_local_files(built, served, sample, bundle_path, tmp_path, monkeypatch,
                                                 capsys) -> None:
    safe, reference = built["safe"]
    bundle = load_bundle(bundle_path)
    (safe.parent / "stacked.tif").write_bytes(reference.read_bytes())
    local = predicted(bundle, reference, tmp_path / "local.tif", clouds="none")
    assert predicted(bundle, f"/vsicurl/{served}/stacked.tif", tmp_path / "vsicurl.tif", clouds="none") == local
    assert predicted(bundle, f"{served}/stacked.tif", tmp_path / "url.tif", clouds="none") == local
    # a STAC item by URL, with hrefs relative to it, read through /vsicurl/
    item = products.stac_item(safe.parent / "item-es.json", safe, "earthsearch")
    assert item.exists()
    want = predicted(bundle, built["safe"][0], tmp_path / "safe.tif")
    assert predicted(bundle, f"{served}/item-es.json", tmp_path / "item.tif") == want
    # ... or by a STAC API's item URL, which names no file
    products.stac_item(safe.parent / "collections" / "s2" / "items" / "S2A_ITEM", safe, "pc")
    assert predicted(bundle, f"{served}/collections/s2/items/S2A_ITEM", tmp_path / "api.tif") == want
    # labels and regions are read where they are, too
    from wetmap.io.vector import read_polygons

    (safe.parent / "regions.gpkg").write_bytes(Path(sample.regions).read_bytes())
    assert len(read_polygons(f"{served}/regions.gpkg")) == len(read_polygons(sample.regions))
    assert run_cli(["predict", bundle_path, f"{served}/nothing-here.tif", "-o", tmp_path / "x.tif"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing-here.tif" in err


# --- the real products in ../shared/realdata ----------------------------------------------------------

@needs_realdata
def test_real_safe_reads_with_offset_and_scl() -> None:
    safe = next((REALDATA / "products" / "s2-l2a-safe").glob("*.SAFE"))
    spec = open_scene(safe)
    assert (spec.form, spec.level, spec.mask.kind) == ("Sentinel-2 SAFE", "L2A", "scl")
    bands = {b.name: b for b in spec.select(products.MODEL_BANDS)}
    assert bands["B02"].path.endswith("_B02_10m.jp2") and bands["B11"].path.endswith("_B11_20m.jp2")
    assert all(b.offset == -1000.0 and b.scale == 1.0 and b.nodata == 0 for b in bands.values())
    from rasterio.windows import Window

    from wetmap.scenes import SceneReader, scene_grid

    grid = scene_grid(list(bands.values()))
    assert (grid.width, grid.height, grid.res) == (576, 576, 10.0)
    with SceneReader(list(bands.values()), grid) as reader, rasterio.open(bands["B02"].path) as b02:
        values, ok = reader.read(Window(100, 100, 64, 64))
        raw = b02.read(1, window=Window(100, 100, 64, 64)).astype(np.float32)
    assert ok.all() and np.array_equal(values[0], raw - 1000)


@needs_realdata
def test_real_l1c_metadata_offsets_by_baseline(tmp_path) -> None:
    from wetmap.scenes.sentinel2 import _from_metadata

    folder = REALDATA / "products" / "s2-l1c-metadata"
    offsets = {}
    for mtd in sorted(folder.glob("*_MTD.xml")):
        spec = _from_metadata(str(mtd), mtd.read_bytes(), str(mtd), str(tmp_path), lambda rel: True)
        offsets[mtd.name.split("_")[3]] = {b.offset for b in spec.bands}
        assert spec.level == "L1C" and spec.mask is None
    assert offsets == {"N0209": {0.0}, "N0400": {-1000.0}}


@needs_realdata
def test_real_landsat_mtl_encodings_agree() -> None:
    folder = next((REALDATA / "products" / "landsat-c2-l2").glob("LC08_*"))
    specs = [open_scene(mtl) for mtl in sorted(folder.glob("*_MTL.*"))]
    assert len(specs) == 3
    assert all(s.bands == specs[0].bands and s.mask == specs[0].mask for s in specs)
    assert specs[0].level == "L2SP" and specs[0].mask.kind == "qa_pixel"
    assert {b.name for b in specs[0].bands} == {"B01", "B02", "B03", "B04", "B8A", "B11", "B12"}
    assert specs[0].bands[1].scale == pytest.approx(0.275) and specs[0].bands[1].offset == pytest.approx(-2000)
    assert "standing in for B08" in specs[0].select(["B08"])[0].label
    for mtl in sorted((REALDATA / "products" / "landsat-c2-metadata").glob("*_MTL.*")):
        meta = read_mtl(mtl)
        spacecraft = meta["IMAGE_ATTRIBUTES"]["SPACECRAFT_ID"]
        sr = meta["LEVEL2_SURFACE_REFLECTANCE_PARAMETERS"]
        assert float(sr["REFLECTANCE_MULT_BAND_4"]) == 2.75e-05 and float(sr["REFLECTANCE_ADD_BAND_4"]) == -0.2
        nir = 5 if landsat_bands(spacecraft) is landsat_bands("LANDSAT_8") else 4
        assert f"FILE_NAME_BAND_{nir}" in meta["PRODUCT_CONTENTS"]


@needs_realdata
def test_real_stac_items_in_both_naming_schemes() -> None:
    folder = REALDATA / "products" / "stac-items"
    pc = open_scene(folder / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json")
    es = open_scene(folder / "S2A_28QCH_20200714_0_L2A.json")
    usgs = open_scene(folder / "LC08_L2SP_028030_20200114_20200824_02_T1_SR.json")
    for spec in (pc, es):
        bands = spec.select(products.MODEL_BANDS)
        assert [b.name for b in bands] == list(products.MODEL_BANDS)
        assert all(b.path.startswith("/vsicurl/https://") and b.offset == 0.0 for b in bands)
        assert spec.mask.kind == "scl" and spec.level == "L2A"
    bands = usgs.select(products.MODEL_BANDS)
    assert [b.label for b in bands][3].startswith("nir08") and bands[0].scale == pytest.approx(0.275)
    assert usgs.mask.kind == "qa_pixel" and usgs.level == "L2SP"


def test_unreadable_products_are_one_line(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(WetmapError, match="holds no raster"):
        open_scene(tmp_path / "empty")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(WetmapError, match="not a readable zip"):
        open_scene(tmp_path / "bad.zip")
    (tmp_path / "item.json").write_text('{"type": "Feature", "assets": {}, "properties": {"platform": "x"}}')
    with pytest.raises(WetmapError, match="platform"):
        open_scene(tmp_path / "item.json")


def test_a_job_maps_a_safe_with_its_own_mask_and_notices_a_changed_product(built, sample, bundle_path,
                                                                            tmp_path) -> None:
    import json

    import yaml

    from wetmap.jobs import run_job

    safe = products.copy_tree(built["safe"][0], tmp_path / built["safe"][0].name)
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({
        "name": "safe-job", "region": {"file": str(sample.regions), "field": "name"},
        "scenes": {"images": [str(tmp_path / "*.SAFE")]}, "model": str(bundle_path),
        "output_root": str(tmp_path / "out"), "vectorize": False,
        "predict": {"tile_size": 64, "overlap": 16, "device": "cpu"}}))
    first = run_job(job)
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert "Sentinel-2 SAFE, L2A" in manifest["scenes"][0] and "SCL (from the product" in manifest["scenes"][0]
    assert manifest["fingerprint"]["inputs"][0]["files"] == sum(1 for p in safe.rglob("*") if p.is_file())
    assert run_job(job).status == "up to date"
    (safe / "MTD_MSIL2A.xml").write_text((safe / "MTD_MSIL2A.xml").read_text() + "\n")
    assert run_job(job).status == "done"


def test_a_coarse_mask_read_from_strips_equals_the_warped_windows(built, sample) -> None:
    """A 20 m SCL under 10 m bands is served from strips; each window is what a warped read gives."""
    from rasterio.windows import Window

    from wetmap.config import CloudConfig
    from wetmap.io.raster import Grid, aligned, open_raster, read_window
    from wetmap.masks.cloud import CloudMask, scl_valid

    scl = next(built["safe"][0].rglob("*_SCL_20m.jp2"))
    with rasterio.open(sample.scene_a) as src:
        grid = Grid.of(src)
    mask = CloudMask(scl, grid, CloudConfig(dilate=2), kind="scl")
    plain = CloudMask(scl, grid, CloudConfig(dilate=0), kind="scl")
    assert mask._strips is not None
    with open_raster(scl) as src:
        view = aligned(src, grid, nodata=0)
        for r, c, h, w in ((0, 0, 64, 64), (40, 200, 64, 56), (120, 10, 100, 80), (192, 192, 64, 64)):
            want = scl_valid(read_window(view, Window(c, r, w, h), 1))
            assert np.array_equal(plain.valid(Window(c, r, w, h)), want)
            grown = mask.valid(Window(c, r, w, h))
            assert grown.shape == (h, w) and not (grown & ~want).any()
        view.close()
    mask.close()
    plain.close()


def test_landsat_level1_is_top_of_atmosphere_reflectance_with_the_sun_elevation(sample, tmp_path) -> None:
    """L1TP: reflectance = (DN x MULT + ADD) / sin(sun elevation), from the MTL's L1 rescaling."""
    import json

    scene = products.read_sample(sample)
    name = "LC09_L1TP_193023_20260614_20260615_02_T1"
    products.write(tmp_path / f"{name}_B4.TIF", scene.bands["B04"], scene.crs, scene.transform, nodata=0)
    (tmp_path / f"{name}_MTL.json").write_text(json.dumps({"LANDSAT_METADATA_FILE": {
        "PRODUCT_CONTENTS": {"PROCESSING_LEVEL": "L1TP", "FILE_NAME_BAND_4": f"{name}_B4.TIF"},
        "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": "LANDSAT_9", "SUN_ELEVATION": "30.0"},
        "LEVEL1_RADIOMETRIC_RESCALING": {"REFLECTANCE_MULT_BAND_4": "2.0E-05", "REFLECTANCE_ADD_BAND_4": "-0.1"}}}))
    spec = open_scene(tmp_path)
    (band,) = spec.select(["red"])
    assert (spec.level, spec.sensor, spec.mask) == ("L1TP", "landsat-9", None)
    assert band.scale == pytest.approx(0.4) and band.offset == pytest.approx(-2000.0)


@pytest.fixture()
def scenes_bucket(built, s3) -> str:
    """The SAFE's files and the stacked GeoTIFF in a bucket of the local S3 server."""
    bucket = s3.bucket("scenes")
    safe, reference = built["safe"]
    for path in safe.rglob("*"):
        if path.is_file():
            s3.client.upload_file(str(path), bucket, str(path.relative_to(safe.parent)))
    s3.client.upload_file(str(reference), bucket, "stacked.tif")
    return bucket


def test_scenes_in_object_storage_predict_as_local_files(built, scenes_bucket, bundle_path, tmp_path, monkeypatch,
                                                         capsys) -> None:
    safe, reference = built["safe"]
    bundle = load_bundle(bundle_path)
    local = predicted(bundle, reference, tmp_path / "local.tif", clouds="none")
    assert predicted(bundle, f"s3://{scenes_bucket}/stacked.tif", tmp_path / "s3.tif", clouds="none") == local
    assert predicted(bundle, f"/vsis3/{scenes_bucket}/stacked.tif", tmp_path / "vsis3.tif", clouds="none") == local
    # a STAC item whose assets are s3:// objects
    item = products.stac_item(tmp_path / "item.json", safe, "pc")
    doc = json.loads(item.read_text())
    for asset in doc["assets"].values():
        asset["href"] = f"s3://{scenes_bucket}/" + str((item.parent / asset["href"]).resolve().relative_to(safe.parent))
    item.write_text(json.dumps(doc))
    assert predicted(bundle, item, tmp_path / "item.tif") == predicted(bundle, safe, tmp_path / "safe.tif")
    assert run_cli(["predict", bundle_path, f"s3://{scenes_bucket}/missing.tif", "-o", tmp_path / "x.tif"], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "/vsis3/scenes/missing.tif" in err


def test_a_multi_granule_product_is_refused_not_cut_to_one_granule(tmp_path) -> None:
    from wetmap.scenes.sentinel2 import _from_metadata

    files = "".join(f"<IMAGE_FILE>GRANULE/{g}/IMG_DATA/S2A_OPER_MSI_L1C_TL_{g}_B02</IMAGE_FILE>" for g in ("A", "B"))
    mtd = (f"<p><PRODUCT_TYPE>S2MSI1C</PRODUCT_TYPE><QUANTIFICATION_VALUE>10000</QUANTIFICATION_VALUE>{files}</p>")
    with pytest.raises(WetmapError, match="lists B02 twice"):
        _from_metadata("old.SAFE", mtd.encode(), "old.SAFE/MTD_MSIL1C.xml", str(tmp_path), lambda rel: True)


def test_an_output_that_is_an_input_is_refused_even_with_overwrite(sample, bundle_path, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    before = Path(sample.scene_a).read_bytes()
    for args in (["-o", sample.scene_a], ["-o", sample.scene_a_scl], ["-o", tmp_path / "scene_a.tif"]):
        code = run_cli(["predict", bundle_path, sample.scene_a, "--clouds", sample.scene_a_scl, *args, "--overwrite",
                        "--set", "device=cpu", "--tile-size", "64", "--overlap", "16"], monkeypatch)
        if args[1] == tmp_path / "scene_a.tif":
            assert code == 0
        else:
            assert code == 2 and "also an input" in capsys.readouterr().err
    assert Path(sample.scene_a).read_bytes() == before


def test_a_stac_item_that_cannot_say_its_offset_is_refused(tmp_path) -> None:
    item = {"type": "Feature", "id": "S2B_X", "properties": {"platform": "sentinel-2b", "datetime": "2023-05-01T10:00:00Z"},
            "assets": {"B04": {"href": "B04.tif", "type": "image/tiff", "roles": ["data"]}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    with pytest.raises(WetmapError, match="cannot tell whether its values carry the -1000 offset"):
        open_scene(tmp_path / "item.json")
    item["properties"]["datetime"] = "2021-05-01T10:00:00Z"   # before baseline 04.00: no offset existed
    (tmp_path / "item.json").write_text(json.dumps(item))
    assert open_scene(tmp_path / "item.json").bands[0].offset == 0.0


def test_loose_sentinel2_files_of_2022_on_warn_about_the_offset(sample, tmp_path) -> None:
    scene = products.read_sample(sample)
    for name in ("B02", "B03"):
        products.write(tmp_path / f"T32UPU_20230612T103031_{name}_10m.jp2", scene.bands[name], scene.crs,
                       scene.transform, driver="JP2OpenJPEG")
    with pytest.warns(WetmapWarning, match="store reflectance \\+ 1000"):
        spec = open_scene(tmp_path)
    assert [b.offset for b in spec.bands] == [0.0, 0.0]


def test_model_bands_are_named_one_way_however_spelled() -> None:
    cfg = config.build(config.TileConfig, {"image": "x", "labels": "y",
                                           "bands": ["B2", "green", "red", "nir", "swir16", "B12"]})
    assert cfg.bands == list(products.MODEL_BANDS)
    with pytest.raises(WetmapError, match="'B13' is not a band name"):
        config.build(config.TileConfig, {"image": "x", "labels": "y", "bands": ["B02", "B13"]})


def test_raw_digital_numbers_are_refused_by_their_median(sample, bundle_path) -> None:
    """Values shifted far from the training mean (e.g. Landsat DN never rescaled) with a normal spread."""
    from dataclasses import replace

    from wetmap.scenes.check import check_range

    bundle = load_bundle(bundle_path)
    spec = open_scene(sample.scene_a)
    bands = spec.select(bundle.bands)
    check_range(spec, bands, bundle.bands, bundle.mean, bundle.std)   # the scene itself passes
    shifted = tuple(replace(b, offset=8000.0) for b in bands)
    with pytest.raises(WetmapError, match="far outside the model's training range"):
        check_range(spec, shifted, bundle.bands, bundle.mean, bundle.std)
