"""The cloud detector: agreement with real references, and what it adds to a predict, in one run.

(a) Agreement with hand-labelled and product masks, in wetmap's classes (clear / cloud / shadow):
    ukis-csmask's own hand-labelled test scenes (tests/data/csmask: Sentinel-2 and Landsat 5, 30 m)
    and, where ../shared/realdata is present, the real L2A scene's SCL (ireland-s2l2a, 60 m).
    Printed: overall accuracy, cloud Dice, shadow Dice, and agreement on clear vs masked (what
    training and prediction use); for the test scenes also the 4-band model (a scene without SWIR)
    and ukis-csmask's own `CSmask` on the same arrays, so any loss from our window-by-window run shows.
(b) Speed on the CPU: the detector's time per megapixel of the scene vs the predict step's own
    (the default model: ResNet-18 U-Net, 6 bands + 4 indices, 256 px tiles, quarter overlap, random
    weights: timing does not depend on them), on a Sentinel-2-like 10 m scene (detected at 30 m) and
    a Landsat-like 30 m scene. The overhead is predict with `--clouds detect` (cache emptied) over
    predict with `--clouds none`, repeats interleaved, medians (target: at most 1.25x), and the same
    once the mask is cached (what tile, training and reruns of a job on the scene pay).
    With `--device cuda` (onnxruntime-gpu and a GPU), both run there.

    .venv/bin/python benchmarks/bench_clouds.py [--repeats 2] [--size 3072] [--json FILE] [--device cpu] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "csmask"
REALDATA = ROOT.parent / "shared" / "realdata"
BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
INDICES = ("NDWI", "MNDWI", "NDVI", "NDMI")

from wetmap.config import CloudConfig, ModelConfig, PredictConfig  # noqa: E402
from wetmap.masks.cloud import CLEAR, CLOUD, SHADOW  # noqa: E402
from wetmap.masks.detection import detected_mask, detector_for, write_detection  # noqa: E402
from wetmap.model.bundle import Bundle  # noqa: E402
from wetmap.model.network import build_network  # noqa: E402
from wetmap.predict.mosaic import predict_scene  # noqa: E402
from wetmap.scenes import open_scene  # noqa: E402


def scores(found: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    def dice(c: int) -> float:
        a, b = found == c, ref == c
        return float(2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1))

    return {"accuracy": float(np.mean(found == ref)), "cloud_dice": dice(CLOUD), "shadow_dice": dice(SHADOW),
            "clear_agreement": float(np.mean((found == CLEAR) == (ref == CLEAR)))}


def write_scene(path: Path, img: np.ndarray, res: float, level: str = "Level-1C") -> Path:
    """A GeoTIFF of `img`'s bands (the first len(img) of BANDS) on a made-up 30 m UTM grid."""
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=img.shape[0],
                       dtype=img.dtype, crs="EPSG:32633", transform=from_origin(300000, 5800000, res, res), nodata=0,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate") as dst:
        dst.write(img)
        dst.descriptions = BANDS[: img.shape[0]]
        dst.update_tags(PROCESSING_LEVEL=level)
    return path


def read(path: str | Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def agreement(folder: Path, device: str) -> dict[str, dict[str, float]]:
    out = {}
    for name in ("sentinel2", "landsat5"):
        data = np.load(DATA / f"{name}.npz")
        msk = data["msk"]
        ref = np.select([msk == 4, msk == 0], [CLOUD, SHADOW], CLEAR)
        source = detected_mask(open_scene(write_scene(folder / f"{name}.tif", data["img"], 30.0)),
                               CloudConfig(device=device))
        out[f"{name} (hand-labelled, L1C model)"] = scores(read(source.path), ref)
        four = detected_mask(open_scene(write_scene(folder / f"{name}_4.tif", data["img"][:4].copy(), 30.0)),
                             CloudConfig(device=device))
        out[f"{name}: no SWIR, the 4-band model"] = scores(read(four.path), ref)
        try:
            from ukis_csmask.mask import CSmask
        except ImportError:
            continue
        own = CSmask(img=np.moveaxis(data["img"], 0, -1).astype(np.float32) / 10000, product_level="l1c",
                     band_order=["blue", "green", "red", "nir", "swir16", "swir22"],
                     providers=["CPUExecutionProvider"]).csm[..., 0]
        out[f"{name}: ukis-csmask's own CSmask"] = scores(own, ref)
    case = REALDATA / "ireland-s2l2a"
    if case.exists():
        source = detected_mask(open_scene(case / "image.tif"), CloudConfig(level="L2A", device=device))
        scl = read(case / "clouds.tif")
        ref = np.select([np.isin(scl, [8, 9, 10]), scl == 3], [CLOUD, SHADOW], CLEAR)
        out["ireland-s2l2a (its SCL, L2A model, 60 m)"] = scores(read(source.path), ref)
    return out


def default_bundle() -> Bundle:
    torch.manual_seed(0)
    network = build_network(ModelConfig(arch="unet", backbone="resnet18", indices=list(INDICES)), len(BANDS) + 4)
    return Bundle(network.eval(), BANDS, ["other", "wetland"], np.full(6, 1500.0), np.full(6, 800.0),
                  {0: (236, 229, 206, 255), 1: (31, 138, 112, 255)}, indices=INDICES, chip_size=256)


def scene_of(size: int, res: float, folder: Path) -> Path:
    """A real cloudy scene made larger: the Sentinel-2 test scene, mirrored to size x size at `res`."""
    img = np.load(DATA / "sentinel2.npz")["img"]
    if res < 30:
        img = np.repeat(np.repeat(img, round(30 / res), axis=1), round(30 / res), axis=2)
    reps = -(-size // img.shape[1])
    tiles = [[img[:, ::(-1) ** i, ::(-1) ** j] for j in range(reps)] for i in range(reps)]
    big = np.concatenate([np.concatenate(row, axis=2) for row in tiles], axis=1)[:, :size, :size]
    return write_scene(folder / f"scene_{size}_{res:g}m.tif", np.ascontiguousarray(big), res)


def speed(folder: Path, size: int, res: float, repeats: int, device: str) -> dict[str, float]:
    image = scene_of(size, res, folder)
    spec = open_scene(image)
    cloud = CloudConfig(device=device)
    bundle = default_bundle()
    cfg = PredictConfig(device=device, cloud=cloud)
    cache = Path(os.environ["WETMAP_CACHE"])
    plain, masked, cached, alone = [], [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_scene(bundle, image, folder / "none.tif", clouds="none", cfg=cfg, overwrite=True)
        plain.append(time.perf_counter() - start)
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        predict_scene(bundle, image, folder / "detect.tif", clouds="detect", cfg=cfg, overwrite=True)
        masked.append(time.perf_counter() - start)
        start = time.perf_counter()   # again: the mask comes from the cache (tile, train, reruns)
        predict_scene(bundle, image, folder / "cached.tif", clouds="detect", cfg=cfg, overwrite=True)
        cached.append(time.perf_counter() - start)
        detector = detector_for(spec, cloud)
        start = time.perf_counter()
        write_detection(spec, detector, cloud, folder / "alone.tif")
        alone.append(time.perf_counter() - start)
    mpx = size * size / 1e6
    p, m, c, a = (statistics.median(x) for x in (plain, masked, cached, alone))
    return {"megapixels": mpx, "predict_s_per_mpx": p / mpx, "detector_s_per_mpx": a / mpx,
            "detector_over_predict": a / p, "predict_detect_over_none": m / p, "predict_cached_over_none": c / p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--size", type=int, default=3072, help="side of the 10 m scene (the 30 m one is half)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--skip-speed", action="store_true", help="agreement only")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["WETMAP_CACHE"] = str(folder / "cache")
        figures: dict[str, object] = {"agreement": agreement(folder, args.device)}
        print("(a) agreement with the reference (wetmap classes clear / cloud / shadow)")
        print(f"  {'scene':<48} {'accuracy':>9} {'cloud Dice':>11} {'shadow Dice':>12} {'clear vs masked':>16}")
        for name, s in figures["agreement"].items():
            print(f"  {name:<48} {s['accuracy']:9.3f} {s['cloud_dice']:11.3f} {s['shadow_dice']:12.3f} "
                  f"{s['clear_agreement']:16.3f}")
        if args.skip_speed:
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))
            return
        detector = detector_for(open_scene(scene_of(256, 30.0, folder)), CloudConfig(device=args.device))
        print(f"(b) speed on {detector.device}, {os.cpu_count()} cores, "
              f"median of {args.repeats} interleaved runs")
        for label, size, res in (("Sentinel-2 10 m, detected at 30 m", args.size, 10.0),
                                 ("Landsat 30 m, detected at 30 m", args.size // 2, 30.0)):
            s = speed(folder, size, res, args.repeats, args.device)
            figures[label] = s
            print(f"  {label} ({size}^2, {s['megapixels']:.1f} Mpx): predict {s['predict_s_per_mpx']:.2f} s/Mpx, "
                  f"detector {s['detector_s_per_mpx']:.2f} s/Mpx = {s['detector_over_predict']:.2f}x predict; "
                  f"predict --clouds detect / --clouds none = {s['predict_detect_over_none']:.2f} (target <= 1.25), "
                  f"with the mask cached {s['predict_cached_over_none']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
