"""Cloud masks on every scene: the detector on real hand-labelled pixels, `--clouds auto / detect`,
`wetmap clouds` maps, and detected clouds kept out of training.

The two real scenes in tests/data/csmask are ukis-csmask's own test scenes (see its README there):
512 x 512 px at 30 m, Sentinel-2 and Landsat 5, hand-labelled clear / cloud / shadow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from conftest import run_cli
from wetmap import config
from wetmap.config import CloudConfig
from wetmap.errors import WetmapError
from wetmap.io.raster import Grid
from wetmap.masks.cloud import CLEAR, CLOUD, GROWN, NO_DATA, SHADOW, CloudMask, raw_classes
from wetmap.masks.detection import block_mean, cache_folder, detected_mask, ready_mask
from wetmap.scenes import open_scene, resolve_mask

DATA = Path(__file__).resolve().parents[1] / "data" / "csmask"
REALDATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
BANDS = ("B02", "B03", "B04", "B08", "B11", "B12")


def reference(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(6,512,512) uint16 reflectance x 10000 and the reference in wetmap's classes."""
    data = np.load(DATA / f"{name}.npz")
    msk = data["msk"]   # ukis-csmask's labels: 0 shadow, 1-3 clear, 4 cloud
    return data["img"], np.select([msk == 4, msk == 0], [CLOUD, SHADOW], CLEAR).astype(np.uint8)


def write_scene(path: Path, img: np.ndarray, res: float = 30.0, level: str | None = "Level-1C") -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=img.shape[0],
                       dtype=img.dtype, crs="EPSG:32633", transform=from_origin(300000, 5800000, res, res),
                       nodata=0, tiled=True, blockxsize=256, blockysize=256) as dst:
        dst.write(img)
        dst.descriptions = BANDS[: img.shape[0]]
        if level:
            dst.update_tags(PROCESSING_LEVEL=level)
    return path


def mask_for(scene: str | Path, clouds: str | None, cloud: CloudConfig | None = None):
    """The mask a stage would read `scene` with, detected if it is to be."""
    spec = open_scene(scene)
    return ready_mask(spec, resolve_mask(spec, clouds), cloud or CloudConfig())


def read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("name, min_accuracy, min_cloud_dice", [("sentinel2", 0.85, 0.8), ("landsat5", 0.78, 0.85)])
def test_the_detector_agrees_with_hand_labelled_real_scenes(name, min_accuracy, min_cloud_dice, tmp_path) -> None:
    img, truth = reference(name)
    source = detected_mask(open_scene(write_scene(tmp_path / f"{name}.tif", img)), CloudConfig())
    assert source.origin == "detected" and source.kind == "classes" and "ukis-csmask" in source.detector
    found = read(source.path)
    accuracy = float(np.mean(found == truth))
    cloud_dice = 2 * np.sum((found == CLOUD) & (truth == CLOUD)) / (np.sum(found == CLOUD) + np.sum(truth == CLOUD))
    # ukis-csmask's own figures on these files are 0.90 and 0.83; all-clear would score 0.70 / 0.44.
    assert accuracy >= min_accuracy and cloud_dice >= min_cloud_dice, (accuracy, cloud_dice)


def test_a_10m_scene_is_detected_at_30m_and_mapped_back_onto_its_own_grid(tmp_path) -> None:
    img, _ = reference("sentinel2")
    coarse = read(detected_mask(open_scene(write_scene(tmp_path / "s30.tif", img)), CloudConfig()).path)
    fine = np.repeat(np.repeat(img, 3, axis=1), 3, axis=2)
    source = detected_mask(open_scene(write_scene(tmp_path / "s10.tif", fine, res=10.0)), CloudConfig())
    with rasterio.open(source.path) as src:
        assert (src.width, src.height, src.res) == (1536, 1536, (10.0, 10.0))
        assert src.tags()["DETECT_RESOLUTION"] == "30.0 m"
        assert np.array_equal(src.read(1), np.repeat(np.repeat(coarse, 3, axis=0), 3, axis=1))
    # A scene that is not a multiple of 3 pixels: its last detector row and column are partial.
    cut = detected_mask(open_scene(write_scene(tmp_path / "cut.tif", fine[:, :1500, :1499].copy(), res=10.0)),
                        CloudConfig())
    mapped = read(cut.path)
    assert mapped.shape == (1500, 1499)
    # other tile positions on a 500 x 500 detector grid move the blend seams: nearly the same classes
    assert np.mean(mapped == np.repeat(np.repeat(coarse, 3, axis=0), 3, axis=1)[:1500, :1499]) > 0.99


def test_no_data_is_no_data_in_the_detected_mask_and_costs_no_detection(tmp_path, monkeypatch) -> None:
    from wetmap.masks.detector import CsmaskDetector

    img, _ = reference("sentinel2")
    full = read(detected_mask(open_scene(write_scene(tmp_path / "full.tif", img)), CloudConfig()).path)
    half = img.copy()
    half[:, :, :300] = 0   # the file's nodata: a scene's edge, as in most Sentinel-2 tiles
    seen = []
    run = CsmaskDetector.probabilities
    monkeypatch.setattr(CsmaskDetector, "probabilities", lambda self, batch: seen.append(len(batch)) or run(self, batch))
    found = read(detected_mask(open_scene(write_scene(tmp_path / "half.tif", half)), CloudConfig()).path)
    assert (found[:, :300] == NO_DATA).all()
    assert np.mean(found[:, 320:] == full[:, 320:]) > 0.95
    assert sum(seen) == 6   # of 3 x 3 tiles, the first column (all no data) was never run


def test_block_mean_leaves_pixels_without_data_out() -> None:
    bands = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    valid = np.ones((4, 4), bool)
    valid[0, 0] = False
    valid[2:, 2:] = False
    mean, ok = block_mean(bands, valid, 2)
    assert mean[0, 0, 0] == pytest.approx((1 + 4 + 5) / 3) and mean[0, 1, 0] == pytest.approx((8 + 9 + 12 + 13) / 4)
    assert ok.tolist() == [[True, True], [True, False]]


def test_auto_takes_the_product_mask_else_detects_and_needs_a_level(tmp_path) -> None:
    img, _ = reference("sentinel2")
    plain = write_scene(tmp_path / "plain.tif", img, level=None)
    with pytest.raises(WetmapError, match="--level L1C or L2A"):
        mask_for(plain, "auto")
    assert resolve_mask(open_scene(plain), "auto").pending   # nothing is detected before it is needed
    assert mask_for(plain, "none") is None
    assert mask_for(plain, "auto", CloudConfig(level="L1C")).origin == "detected"
    with pytest.raises(WetmapError, match="the product says L1C"):
        mask_for(write_scene(tmp_path / "l1c.tif", img), "detect", CloudConfig(level="L2A"))
    # Band files with their SCL: auto reads the product's mask, detect runs the detector anyway.
    folder = tmp_path / "bands"
    folder.mkdir()
    profile = {"driver": "GTiff", "width": 512, "height": 512, "count": 1, "crs": "EPSG:32633",
               "transform": from_origin(300000, 5800000, 30, 30)}
    for k, band in enumerate(BANDS):
        with rasterio.open(folder / f"T33UUU_20170216T102101_{band}_30m.tif", "w", dtype="uint16", **profile) as dst:
            dst.write(img[k], 1)
    with rasterio.open(folder / "T33UUU_20170216T102101_SCL_30m.tif", "w", dtype="uint8", **profile) as dst:
        dst.write(np.full((512, 512), 4, np.uint8), 1)
    assert mask_for(folder, None).origin == "product"
    assert mask_for(folder, "detect", CloudConfig(level="L1C")).origin == "detected"


def test_a_detected_mask_is_cached_until_the_scene_changes(tmp_path) -> None:
    img, _ = reference("landsat5")
    path = write_scene(tmp_path / "scene.tif", img)
    first = detected_mask(open_scene(path), CloudConfig())
    assert Path(first.path).parent == cache_folder() and str(cache_folder()).startswith(os.environ["WETMAP_CACHE"])
    stamp = os.stat(first.path).st_mtime_ns
    assert detected_mask(open_scene(path), CloudConfig()).path == first.path
    assert os.stat(first.path).st_mtime_ns == stamp, "detected again"
    assert detected_mask(open_scene(path), CloudConfig(detect_resolution=60)).path != first.path
    write_scene(path, img[:, ::-1].copy())   # the same file name, other pixels
    assert detected_mask(open_scene(path), CloudConfig()).path != first.path


def mask_file(path: Path, data: np.ndarray, description: str) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=data.dtype, crs="EPSG:32633", transform=from_origin(0, 640, 10, 10)) as dst:
        dst.write(data, 1)
        dst.set_band_description(1, description)
    return path


@pytest.mark.parametrize("kind, values", [
    ("scl", {CLEAR: 4, CLOUD: 9, SHADOW: 3, NO_DATA: 0}),
    ("qa_pixel", {CLEAR: 0b1000000, CLOUD: 0b1000, SHADOW: 0b10000, NO_DATA: 1}),
    ("mask", {CLEAR: 0, CLOUD: 1}),
])
def test_classes_say_why_a_pixel_is_masked_and_agree_with_the_valid_mask(kind, values, tmp_path) -> None:
    rng = np.random.default_rng(0)
    chosen = rng.choice(list(values), size=(64, 64), p=[0.94] + [0.06 / (len(values) - 1)] * (len(values) - 1))
    raw = np.vectorize(values.get)(chosen).astype(np.uint16 if kind == "qa_pixel" else np.uint8)
    description = {"scl": "SCL", "qa_pixel": "QA_PIXEL", "mask": "clouds"}[kind]
    path = mask_file(tmp_path / "m.tif", raw, description)
    assert raw_classes(raw, kind).tolist() == chosen.tolist()
    grid = Grid(rasterio.crs.CRS.from_epsg(32633), from_origin(0, 640, 10, 10), 64, 64)
    mask = CloudMask(path, grid, CloudConfig(dilate=2), kind=kind)
    window = Window(5, 7, 40, 33)
    classes, valid = mask.classes(window), mask.valid(window)
    assert np.array_equal(classes == CLEAR, valid)
    assert (classes == GROWN).any()
    inner = chosen[7:40, 5:45]
    assert np.array_equal(classes[classes != GROWN], inner[classes != GROWN])


def test_wetmap_clouds_writes_a_styled_cog_that_reads_back_as_the_same_mask(tmp_path, monkeypatch) -> None:
    from rio_cogeo.cogeo import cog_validate

    img, _ = reference("sentinel2")
    scene = write_scene(tmp_path / "scene.tif", img)
    out = tmp_path / "maps" / "clouds.tif"
    assert run_cli(["clouds", scene, "-o", out, "--dilate", "1"], monkeypatch) == 0
    assert cog_validate(str(out))[0]
    with rasterio.open(out) as src:
        assert src.descriptions == ("cloud classes",) and src.nodata == 255
        assert src.colormap(1)[CLOUD][:3] == (240, 240, 255)   # a TIFF palette has no alpha: the .qml hides clear
        assert "ukis-csmask" in src.tags()["CLOUD_MASK"] and src.overviews(1)
        written = src.read(1)
    qml = out.with_suffix(".qml").read_text()
    assert 'label="shadow"' in qml and 'value="0" color="#000000" alpha="0" label="clear"' in qml
    assert {CLEAR, CLOUD, SHADOW, GROWN} <= set(np.unique(written).tolist())
    # What the stages would use is exactly the map's clear pixels, and the map is a mask file itself.
    grid = Grid(rasterio.crs.CRS.from_epsg(32633), from_origin(300000, 5800000, 30, 30), 512, 512)
    used = mask_for(scene, "auto")
    valid = CloudMask(used.path, grid, CloudConfig(dilate=1), kind=used.kind).valid(Window(0, 0, 512, 512))
    assert np.array_equal(valid, written == CLEAR)
    again = mask_for(scene, str(out))
    assert again.kind == "classes"
    assert np.array_equal(CloudMask(again.path, grid, kind=again.kind).valid(Window(0, 0, 512, 512)), valid)
    assert run_cli(["clouds", scene, "-o", out], monkeypatch) == 2   # exists, no --overwrite
    plain = write_scene(tmp_path / "plain.tif", img, level=None)
    assert run_cli(["clouds", plain, "-o", tmp_path / "p.tif"], monkeypatch) == 2
    assert not (tmp_path / "p.tif").exists()


def train_cfg(scene: Path, labels: Path, out: Path) -> config.TrainRunConfig:
    return config.build(config.TrainRunConfig, {
        "seed": 1,
        "data": {"image": str(scene), "labels": str(labels), "chip_size": 128, "min_valid": 0.05,
                 "split_block": 1, "val_fraction": 0.25},
        "model": {"backbone": "resnet18", "indices": []},
        "train": {"epochs": 1, "batch_size": 4, "checkpoint_minutes": 0, "augment": "none", "sampling": "uniform"},
        "output": str(out),
    })


@pytest.mark.slow
def test_training_with_auto_clouds_leaves_detected_clouds_out_of_the_loss(tmp_path) -> None:
    """An L1C scene without a mask: labels flipped under the detected clouds change nothing; the same
    flip on clear pixels changes the weights (so the comparison can fail)."""
    img, _ = reference("sentinel2")
    scene = write_scene(tmp_path / "scene.tif", img)
    detected = read(detected_mask(open_scene(scene), CloudConfig()).path)
    cloudy = detected != CLEAR
    labels = (img[3].astype(float) < 1500).astype(np.uint8)   # dark in the NIR: water and shadow, roughly

    def label_file(name: str, flip: np.ndarray) -> Path:
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint8", nodata=255,
                           crs="EPSG:32633", transform=from_origin(300000, 5800000, 30, 30)) as dst:
            dst.write(np.where(flip, 1 - labels, labels).astype(np.uint8), 1)
        return path

    from wetmap.train.fit import fit

    runs = {}
    clear_patch = np.zeros_like(cloudy)
    clear_patch[::7, ::5] = True
    for name, flip in (("base", np.zeros_like(cloudy)), ("under_clouds", cloudy), ("clear", clear_patch & ~cloudy)):
        result = fit(train_cfg(scene, label_file(f"{name}.tif", flip), tmp_path / name))
        runs[name] = torch.load(result.bundle, weights_only=True)["state_dict"]
        assert result.clouds.startswith("detected by ukis-csmask")
    same = all(torch.equal(runs["base"][k], runs["under_clouds"][k]) for k in runs["base"])
    differ = any(not torch.equal(runs["base"][k], runs["clear"][k]) for k in runs["base"])
    assert same and differ, (same, differ)


@pytest.mark.skipif(not (REALDATA / "ireland-s2l2a").exists(), reason="../shared/realdata is not here")
def test_on_a_real_l2a_scene_the_detector_agrees_with_its_scl(tmp_path) -> None:
    case = REALDATA / "ireland-s2l2a"
    source = mask_for(case / "image.tif", "detect", CloudConfig(level="L2A"))
    found = read(source.path)
    scl = read(case / "clouds.tif")
    ref = np.select([np.isin(scl, [8, 9, 10]), scl == 3], [CLOUD, SHADOW], CLEAR)
    cloud_dice = 2 * np.sum((found == CLOUD) & (ref == CLOUD)) / (np.sum(found == CLOUD) + np.sum(ref == CLOUD))
    # measured: 0.90 of pixels in the same class, cloud Dice 0.93, the clear / masked split 0.93
    assert np.mean(found == ref) > 0.85 and cloud_dice > 0.88 and np.mean((found == CLEAR) == (ref == CLEAR)) > 0.88


def test_predict_with_auto_clouds_masks_the_detected_clouds_and_says_so(bundle_path, tmp_path) -> None:
    from wetmap.predict.mosaic import predict_mosaic

    img, _ = reference("sentinel2")
    scene = write_scene(tmp_path / "scene.tif", img)
    cfg = config.PredictConfig(tile_size=64, overlap=16, device="cpu")
    result = predict_mosaic(bundle_path, [scene], tmp_path / "map.tif", cfg=cfg, force=True)
    with rasterio.open(result.classes) as src:
        tag, classes = src.tags()["CLOUD_MASKS"], src.read(1)
    assert "detected by ukis-csmask" in tag and "L1C, 30 m" in tag
    assert any("clouds detected by ukis-csmask" in line for line in result.scenes_read)
    detected = read(mask_for(scene, "auto").path)
    assert np.array_equal(classes == 255, detected != CLEAR)   # masked exactly where the detector says


def test_without_swir_the_4_band_model_runs_and_nir_may_be_b8a(tmp_path) -> None:
    from wetmap.masks.detector import csmask_bands

    assert csmask_bands({"B02", "B03", "B04", "B8A", "B11", "B12"}) == ("B02", "B03", "B04", "B8A", "B11", "B12")
    assert csmask_bands({"B02", "B03", "B04", "B08", "B11"}) == ("B02", "B03", "B04", "B08")
    assert csmask_bands({"B02", "B03", "B04"}) is None
    img, truth = reference("sentinel2")
    source = detected_mask(open_scene(write_scene(tmp_path / "four.tif", img[:4].copy())), CloudConfig())
    assert "4BL1C" in source.detector
    found = read(source.path)
    cloud_dice = 2 * np.sum((found == CLOUD) & (truth == CLOUD)) / (np.sum(found == CLOUD) + np.sum(truth == CLOUD))
    assert np.mean(found == truth) > 0.85 and cloud_dice > 0.8   # measured 0.93 and 0.90
