"""Reading cost of a real product: `wetmap predict` on a Sentinel-2 SAFE vs the same scene pre-stacked.

A generated N x N scene (default 4096) is written twice:
  - as an L2A SAFE the way ESA delivers it: B02, B03, B04, B08 at 10 m and B11, B12 at 20 m as
    lossless JPEG 2000 (1024 px tiles at 10 m, 640 at 20 m, as in real products), processing
    baseline 04.00 (DN = reflectance x 10000 + 1000), SCL at 20 m;
  - as the stack a user would make to avoid that: one 6-band uint16 tiled DEFLATE GeoTIFF at
    10 m (reflectance x 10000), with the same SCL passed by --clouds.
Both are predicted with the same ResNet-18 U-Net (random weights: timing does not depend on
them) and, to show what bounds the ratio, with a 1x1-convolution model (the data path alone);
then each band file's share of reading is timed alone, and GDAL's JPEG 2000 decoding rate.
Runs alternate between the two forms; medians of the repeats. Target: SAFE <= 1.3x the stack.

    .venv/bin/python benchmarks/bench_scene_read.py [--size 4096] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS

from bench_predict import pointwise, unet
from wetmap.config import PredictConfig
from wetmap.predict.mosaic import predict_mosaic

CFG = PredictConfig(tile_size=256, overlap=64, batch_size=8, device="cpu")
TILE = "T32UPU_20260614T103031"


def band_values(size: int, band: int, rows: slice) -> np.ndarray:
    x = np.arange(size, dtype=np.float32)[None, :]
    y = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
    field = np.sin(x / 97.0) * np.cos(y / 83.0) + 0.5 * np.sin((x + y) / 31.0)
    noise = np.random.default_rng([band, rows.start]).integers(0, 60, size=field.shape)
    return (1500 + 600 * band + 900 * field + noise).astype(np.uint16)


def make_products(folder: Path, size: int) -> tuple[Path, Path, Path]:
    """(SAFE folder, stacked GeoTIFF, SCL) of one generated scene."""
    crs, transform = CRS.from_epsg(32632), Affine(10, 0, 600_000, 0, -10, 5_900_000)
    safe = folder / "S2A_MSIL2A_20260614T103031_N0400_R065_T32UPU_20260614T103031.SAFE"
    granule = "GRANULE/L2A_T32UPU_A000001_20260614T103031/IMG_DATA"
    stack = folder / "stacked.tif"
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    files = []
    stacked = rasterio.open(stack, "w", driver="GTiff", width=size, height=size, count=6, dtype="uint16", nodata=0,
                            crs=crs, transform=transform, tiled=True, blockxsize=256, blockysize=256,
                            compress="deflate", predictor=2, zlevel=1)
    for k, band in enumerate(bands):
        res = 10 if k < 4 else 20
        n = size * 10 // res
        rel = f"{granule}/R{res}m/{TILE}_{band}_{res}m"
        path = safe / f"{rel}.jp2"
        path.parent.mkdir(parents=True, exist_ok=True)
        full = np.concatenate([band_values(size, k, slice(r, min(r + 1024, size))) for r in range(0, size, 1024)])
        coarse = full.reshape(n, res // 10, n, res // 10).mean(axis=(1, 3)).astype(np.uint16) if res > 10 else full
        with rasterio.open(path, "w", driver="JP2OpenJPEG", width=n, height=n, count=1, dtype="uint16", crs=crs,
                           transform=transform * Affine.scale(res // 10), QUALITY="100", REVERSIBLE="YES",
                           BLOCKXSIZE=1024 if res == 10 else 640, BLOCKYSIZE=1024 if res == 10 else 640) as dst:
            dst.write(coarse + 1000, 1)
        # the stack holds the coarse bands on the 10 m grid (repeated; a bilinear warp reads alike)
        up = np.repeat(np.repeat(coarse, res // 10, 0), res // 10, 1) if res > 10 else coarse
        stacked.write(up, k + 1)
        stacked.set_band_description(k + 1, band)
        files.append(rel)
    stacked.close()
    n = size // 2
    y, x = np.mgrid[0:n, 0:n]
    scl = np.where(np.cos(x / 200.0) * np.sin(y / 175.0) > 0.55, 9, 4).astype(np.uint8)
    scl_rel = f"{granule}/R20m/{TILE}_SCL_20m"
    with rasterio.open(safe / f"{scl_rel}.jp2", "w", driver="JP2OpenJPEG", width=n, height=n, count=1, dtype="uint8",
                       crs=crs, transform=transform * Affine.scale(2), QUALITY="100", REVERSIBLE="YES",
                       BLOCKXSIZE=640, BLOCKYSIZE=640) as dst:
        dst.write(scl, 1)
    files.append(scl_rel)
    images = "".join(f"<IMAGE_FILE>{f}</IMAGE_FILE>" for f in files)
    offsets = "".join(f'<BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
    physical = ["B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12"]
    info = "".join(f'<Spectral_Information bandId="{i}" physicalBand="{b}"/>' for i, b in enumerate(physical))
    (safe / "MTD_MSIL2A.xml").write_text(
        "<Level-2A_User_Product><General_Info><Product_Info><PRODUCT_TYPE>S2MSI2A</PRODUCT_TYPE>"
        f"<PROCESSING_BASELINE>04.00</PROCESSING_BASELINE><Granule>{images}</Granule></Product_Info>"
        "<Product_Image_Characteristics><BOA_QUANTIFICATION_VALUE>10000</BOA_QUANTIFICATION_VALUE>"
        f"<BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST>"
        f"<Spectral_Information_List>{info}</Spectral_Information_List></Product_Image_Characteristics>"
        "</General_Info></Level-2A_User_Product>")
    return safe, stack, safe / f"{scl_rel}.jp2"


def read_breakdown(scene: Path, size: int) -> dict[str, float]:
    """Seconds each band file takes to serve prediction's tiles (strips, warps, decoding), read alone."""
    from wetmap.io.windows import TileGrid
    from wetmap.predict.scenes import read_env
    from wetmap.scenes import SceneReader, open_scene, scene_grid

    bands = open_scene(scene).select(["B02", "B03", "B04", "B08", "B11", "B12"])
    grid = scene_grid(bands)
    times: dict[str, float] = {}
    with read_env(), SceneReader(bands, grid, strips=True) as reader:
        for tile in TileGrid(size, size, CFG.tile_size, CFG.overlap):
            for file in reader.files:
                start = time.perf_counter()
                file.read(tile.window)
                key = "+".join(b.name for b in file.sources)
                times[key] = times.get(key, 0.0) + time.perf_counter() - start
    return {k: round(v, 2) for k, v in times.items()}


def decode_rate(path: Path, threads: str) -> float:
    """Mpx/s of GDAL decoding one whole JPEG 2000 band."""
    with rasterio.Env(GDAL_NUM_THREADS=threads), rasterio.open(path) as src:
        start = time.perf_counter()
        src.read(1)
        return round(src.width * src.height / 1e6 / (time.perf_counter() - start), 1)


def timed(bundle, scene: Path, clouds: Path | None, out: Path) -> float:
    start = time.perf_counter()
    predict_mosaic(bundle, [scene], out, clouds=[clouds], cfg=CFG, probabilities=True, overwrite=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    figures: dict[str, float] = {"size": args.size, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        safe, stack, scl = make_products(folder, args.size)
        figures["write_s"] = round(time.perf_counter() - start, 1)
        for name, model in (("unet", unet()), ("pointwise", pointwise())):
            times: dict[str, list[float]] = {"safe": [], "stacked": []}
            timed(model, stack, scl, folder / "out_warm.tif")   # warm-up: kernels, page cache
            for r in range(args.repeats):
                order = ("safe", "stacked") if r % 2 == 0 else ("stacked", "safe")
                for form in order:
                    scene, clouds = (safe, None) if form == "safe" else (stack, scl)
                    times[form].append(timed(model, scene, clouds, folder / f"out_{form}.tif"))
            safe_s, stack_s = statistics.median(times["safe"]), statistics.median(times["stacked"])
            figures[f"{name}_safe_s"] = round(safe_s, 2)
            figures[f"{name}_stacked_s"] = round(stack_s, 2)
            figures[f"{name}_ratio"] = round(safe_s / stack_s, 3)
            figures[f"{name}_ratios"] = [round(a / b, 3) for a, b in zip(times["safe"], times["stacked"])]
        figures["read_s_safe"] = read_breakdown(safe, args.size)
        figures["read_s_stacked"] = read_breakdown(stack, args.size)
        b02 = next(safe.rglob("*_B02_10m.jp2"))
        figures["jp2_decode_mpx_s"] = {"1 thread": decode_rate(b02, "1"), "all cores": decode_rate(b02, "ALL_CPUS")}
    if args.json:
        print(json.dumps(figures))
        return
    px = args.size * args.size / 1e6
    print(f"scene {args.size}^2 ({px:.1f} Mpx), products written in {figures['write_s']} s; medians of {args.repeats}")
    for name, label in (("unet", "U-Net (ResNet-18), end to end"), ("pointwise", "1x1 conv: the data path alone")):
        print(f"{label}: SAFE {figures[f'{name}_safe_s']} s, stacked {figures[f'{name}_stacked_s']} s, "
              f"ratio {figures[f'{name}_ratio']} (per round {figures[f'{name}_ratios']}; target <= 1.3 end to end)")
    print(f"serving prediction's tiles, per band file, read alone (s): SAFE {figures['read_s_safe']}; "
          f"stacked {figures['read_s_stacked']}")
    print(f"JPEG 2000 decoding of one 10 m band (GDAL's OpenJPEG), Mpx/s: {figures['jp2_decode_mpx_s']}")


if __name__ == "__main__":
    main()
