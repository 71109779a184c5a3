"""`wetmap tile` throughput, Dask scale-out and memory, in one run.

On a generated N x N x 6 uint16 tiled DEFLATE GeoTIFF (with an SCL mask and a label raster):
  (1) tile throughput vs reading the same file block by block with rasterio (target >= 0.8x):
      `--repeats` rounds of (read, tile in-process), interleaved, each started with the page
      cache's dirty pages flushed (a previous round's writes otherwise throttle the next one);
      the median ratio counts, and the first tile of the process (which also loads the compiled
      mask kernel) is printed apart;
  (2) a LocalCluster of 2 workers vs 1 worker (target >= 1.6x faster), each cluster started and its
      workers' imports and kernel load done before the clock starts (that one-time cost is printed
      apart);
  (3) peak RSS of `wetmap tile` on 16384^2 vs 4096^2 (target <= 1.3x).

    .venv/bin/python benchmarks/bench_tile.py [--size 8192] [--repeats 3] [--skip-memory]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from wetmap import config
from wetmap.chipmask import mask_chip
from wetmap.chips import LABEL_UNKNOWN, build_chip_store
from wetmap.cluster import dask_client

BANDS = ["B02", "B03", "B04", "B08", "B11", "B12"]
BLOCK = 256


def make_inputs(folder: Path, size: int) -> dict[str, Path]:
    """Scene, SCL and labels of `size` pixels, written strip by strip (never whole in memory)."""
    transform = Affine(10, 0, 600_000, 0, -10, 5_900_000)
    common = {"driver": "GTiff", "width": size, "height": size, "crs": CRS.from_epsg(32632), "transform": transform,
              "tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate", "zlevel": 1,
              "predictor": 2, "BIGTIFF": "IF_SAFER"}
    paths = {"image": folder / f"scene_{size}.tif", "scl": folder / f"scl_{size}.tif",
             "labels": folder / f"labels_{size}.tif"}
    rng = np.random.default_rng(0)
    x = np.arange(size, dtype=np.float32)[None, :]
    with rasterio.open(paths["image"], "w", count=6, dtype="uint16", nodata=0, **common) as img, \
            rasterio.open(paths["scl"], "w", count=1, dtype="uint8", nodata=0, **common) as scl, \
            rasterio.open(paths["labels"], "w", count=1, dtype="uint8", nodata=255, **common) as lab:
        for i, b in enumerate(BANDS, start=1):
            img.set_band_description(i, b)
        scl.set_band_description(1, "SCL")
        for row in range(0, size, 1024):
            y = np.arange(row, min(row + 1024, size), dtype=np.float32)[:, None]
            field = np.sin(x / 97.0) * np.cos(y / 83.0) + 0.5 * np.sin((x + y) / 31.0)
            window = Window(0, row, size, y.shape[0])
            for band in range(6):
                noise = rng.integers(0, 60, size=field.shape, dtype=np.uint16)
                img.write((1500 + 600 * band + 900 * field).astype(np.uint16) + noise, band + 1, window=window)
            clouds = np.cos(x / 400.0) * np.sin(y / 350.0) > 0.55
            scl.write(np.where(clouds, 9, 4).astype(np.uint8), 1, window=window)
            lab.write((field > 1.1).astype(np.uint8), 1, window=window)
    return paths


def read_blocks(path: Path) -> float:
    """Seconds to read every block of every band once, in file order, with rasterio."""
    start = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=256), rasterio.open(path) as src:
        for _, window in src.block_windows(1):
            src.read(window=window)
    return time.perf_counter() - start


def tile_cfg(paths: dict[str, Path]) -> config.TileConfig:
    return config.build(config.TileConfig, {"image": str(paths["image"]), "labels": str(paths["labels"]),
                                            "clouds": str(paths["scl"]), "size": 256, "overlap": 0,
                                            "split": {"block": 2048}})


def load_kernel() -> None:
    """What a process does once, on its first chip: load the compiled mask kernel (for uint16)."""
    mask_chip(np.zeros((1, 1, 1), np.uint16), np.zeros((1, 1), np.uint8), np.ones((1, 1), bool), 0, LABEL_UNKNOWN)


def run_tile(paths: dict[str, Path], out: Path, workers: int | None) -> tuple[float, float]:
    """(seconds to start the cluster and ready its workers, seconds to tile)."""
    start = time.perf_counter()
    with dask_client(workers) as client:
        if client is not None:
            client.run(load_kernel)
        ready = time.perf_counter()
        build_chip_store(tile_cfg(paths), out, overwrite=True, client=client)
        return ready - start, time.perf_counter() - ready


def peak_rss_mb(paths: dict[str, Path], out: Path) -> float:
    """Peak resident memory of a `wetmap tile` process (in-process scheduler)."""
    wetmap = Path(sys.executable).with_name("wetmap")
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    cmd = [sys.executable, "-c", code, str(wetmap), "tile", "--image", str(paths["image"]), "--labels",
           str(paths["labels"]), "--clouds", str(paths["scl"]), "-o", str(out), "--size", "256", "--overlap", "0",
           "--set", "split.block=2048", "--overwrite"]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1]) / 1024


def speed(folder: Path, size: int, repeats: int) -> None:
    """(1) throughput against a plain block-by-block read, (2) 1 vs 2 LocalCluster workers."""
    t0 = time.perf_counter()
    paths = make_inputs(folder, size)
    print(f"generated {size}^2 x 6 uint16 DEFLATE GeoTIFF + SCL + labels in {time.perf_counter() - t0:.0f} s")
    mpx = size**2 / 1e6
    read_blocks(paths["image"])  # warm the page cache so both sides read from memory
    _, t_first = run_tile(paths, folder / "chips0", None)
    print(f"first tile in this process: {t_first:.2f} s (includes loading the compiled mask kernel)")
    rounds = []
    for i in range(repeats):
        os.sync()
        t_read = read_blocks(paths["image"])
        os.sync()
        _, t_tile = run_tile(paths, folder / f"chips{i + 1}", None)
        rounds.append((t_read, t_tile))
        print(f"  round {i + 1}: rasterio block-by-block read {t_read:5.2f} s ({mpx / t_read:5.1f} Mpx/s), "
              f"wetmap tile {t_tile:5.2f} s ({mpx / t_tile:5.1f} Mpx/s), ratio {t_read / t_tile:.2f}")
    ratio = statistics.median(r / t for r, t in rounds)
    print(f"wetmap tile (in-process) throughput ratio, median of {repeats}: {ratio:.2f} (target >= 0.8)")
    os.sync()
    s1, t1 = run_tile(paths, folder / "chips_1w", 1)
    os.sync()
    s2, t2 = run_tile(paths, folder / "chips_2w", 2)
    print(f"LocalCluster 1 worker: {t1:6.2f} s; 2 workers: {t2:6.2f} s -> speed-up {t1 / t2:.2f} (target >= 1.6)")
    print(f"  (not in those times: starting the cluster and readying its workers (imports, compiled kernel), "
          f"{s1:.1f} s for 1 worker, {s2:.1f} s for 2; with them the speed-up is {(s1 + t1) / (s2 + t2):.2f})")


def memory(folder: Path) -> None:
    """(3) peak RSS of `wetmap tile` as the scene grows 16-fold in area."""
    rss = {}
    for size in (4096, 16384):
        paths = make_inputs(folder, size)
        rss[size] = peak_rss_mb(paths, folder / f"mem{size}")
        for path in paths.values():
            path.unlink()
    print(f"peak RSS: 4096^2 {rss[4096]:.0f} MB, 16384^2 {rss[16384]:.0f} MB -> ratio "
          f"{rss[16384] / rss[4096]:.2f} (target <= 1.3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved (read, tile) rounds")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 4096^2 vs 16384^2 memory runs")
    parser.add_argument("--only-memory", action="store_true", help="only the memory runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        if not args.only_memory:
            speed(Path(tmp), args.size, args.repeats)
        if not args.skip_memory:
            memory(Path(tmp))


if __name__ == "__main__":
    main()
