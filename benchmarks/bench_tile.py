"""`wetmap tile` throughput, Dask scale-out and memory, in one run.

On a generated N x N x 6 uint16 tiled DEFLATE GeoTIFF (with an SCL mask and a label raster):
  (1) tile throughput vs reading the same file block by block with rasterio (target >= 0.8x):
      `--repeats` rounds of (read, tile in-process, tile with --compress), interleaved, each step
      started with the page cache's dirty pages flushed (a previous step's writes otherwise
      throttle the next one); the median ratio counts, and the first tile of the process (which
      also loads the compiled mask kernel) is printed apart; so are the store's sizes and the
      time to read a training chip back from each;
  (2) a LocalCluster of 2 workers vs 1 worker (target >= 1.6x faster): `--repeats` rounds of one
      run on each, one cluster up at a time, the order alternating; each cluster is started, and
      its workers' imports and kernel load done, before the clock starts (that one-time cost is
      printed apart); the median speed-up counts;
  (3) peak RSS of `wetmap tile` on 16384^2 vs 4096^2 (target <= 1.3x);
  (4) with `--writers`: the chip store's chunks written by wetmap's own writer (plain files for
      raw chunks) vs zarr-python's default codec pipeline, the `zarrs` codec pipeline and
      `tensorstore`, raw and with --compress, interleaved rounds, each as a tiling rate over the
      same run's own-writer rate (a library is used if it is within 10 %). zarrs and tensorstore are
      not wetmap dependencies: `pip install zarrs==0.2.3 tensorstore==0.1.86` first.

    .venv/bin/python benchmarks/bench_tile.py [--size 8192] [--repeats 5] [--skip-memory] [--writers]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import zarr
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

import wetmap.chips.chunks
from wetmap import config
from wetmap.chips.build import build_chip_store
from wetmap.chips.mask import mask_chip
from wetmap.chips.store import LABEL_UNKNOWN, open_chip_store
from wetmap.runtime import dask_client

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


def tile_cfg(paths: dict[str, Path], compress: bool = False) -> config.TileConfig:
    return config.build(config.TileConfig, {"image": str(paths["image"]), "labels": str(paths["labels"]),
                                            "clouds": str(paths["scl"]), "size": 256, "overlap": 0,
                                            "compress": compress, "split": {"block": 2048}})


def ready_worker() -> None:
    """What a worker process does once, on its first chip: import the tiler (Zarr, rasterio,
    GeoPandas: ~1 s) and load the compiled mask kernel (for uint16)."""
    import wetmap.chips  # noqa: F401  (a task names `wetmap.chips.cut._cut_batch`; this imports it first)

    mask_chip(np.zeros((1, 1, 1), np.uint16), np.zeros((1, 1), np.uint8), np.ones((1, 1), bool), np.ones((1, 1), bool),
              0, LABEL_UNKNOWN)


def run_tile(paths: dict[str, Path], out: Path, compress: bool = False) -> float:
    """Seconds to tile in this process (Dask's threaded scheduler)."""
    start = time.perf_counter()
    build_chip_store(tile_cfg(paths, compress), out, overwrite=True)
    return time.perf_counter() - start


def store_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def chip_read_ms(path: Path, n: int = 300) -> float:
    """Milliseconds to read one training chip's image, label and valid mask, in random order."""
    store = open_chip_store(path)
    ids = np.random.default_rng(0).permutation(store.chips("train"))[:n]
    start = time.perf_counter()
    for j in ids:
        np.asarray(store.image[j]), np.asarray(store.label[j]), np.asarray(store.valid[j])
    return (time.perf_counter() - start) / len(ids) * 1000


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
    t_first = run_tile(paths, folder / "chips_first")
    shutil.rmtree(folder / "chips_first")
    print(f"first tile in this process: {t_first:.2f} s (includes loading the compiled mask kernel)")
    rounds, sizes, reads = [], {}, {}
    for i in range(repeats):
        times = []
        for step in ("read", "tile", "tile --compress"):
            os.sync()
            if step == "read":
                times.append(read_blocks(paths["image"]))
                continue
            out = folder / "chips_round"
            times.append(run_tile(paths, out, "compress" in step))
            sizes[step] = store_mb(out)
            if i == 0:
                reads[step] = chip_read_ms(out)
            shutil.rmtree(out)   # every step writes into the same free space
        rounds.append(times)
        t_read, t_tile, t_packed = times
        print(f"  round {i + 1}: rasterio block-by-block read {t_read:5.2f} s ({mpx / t_read:5.1f} Mpx/s); wetmap tile "
              f"{t_tile:5.2f} s ({mpx / t_tile:5.1f} Mpx/s), ratio {t_read / t_tile:.2f}; with --compress "
              f"{t_packed:5.2f} s, ratio {t_read / t_packed:.2f}")
    ratio = statistics.median(r / t for r, t, _ in rounds)
    packed = statistics.median(r / p for r, _, p in rounds)
    print(f"wetmap tile (in-process) throughput ratio, median of {repeats}: {ratio:.2f} (target >= 0.8); "
          f"with --compress: {packed:.2f}")
    print(f"  chip store: {sizes['tile']:.0f} MB; with --compress {sizes['tile --compress']:.0f} MB. Reading a "
          f"training chip (image, label, valid) at random: {reads['tile']:.2f} ms; with --compress "
          f"{reads['tile --compress']:.2f} ms")
    scale_out(paths, folder, repeats)


def timed_on_cluster(paths: dict[str, Path], folder: Path, workers: int) -> tuple[float, float]:
    """(seconds to start a LocalCluster of `workers` and ready them, seconds of one tile on it)."""
    start = time.perf_counter()
    with dask_client(workers) as client:
        client.run(ready_worker)
        ready = time.perf_counter() - start
        os.sync()
        start = time.perf_counter()
        build_chip_store(tile_cfg(paths), folder / "chips_cluster", client=client)
        took = time.perf_counter() - start
    shutil.rmtree(folder / "chips_cluster")
    return ready, took


def scale_out(paths: dict[str, Path], folder: Path, repeats: int) -> None:
    """(2) 1 vs 2 LocalCluster workers, one cluster up at a time (an idle cluster's scheduler,
    nanny and worker took ~5% of a core here, which the other cluster's run would pay for); the
    two alternate which goes first from round to round."""
    speedups, ready = [], {1: [], 2: []}
    for i in range(repeats):
        times = {}
        for workers in ((1, 2) if i % 2 == 0 else (2, 1)):
            up, times[workers] = timed_on_cluster(paths, folder, workers)
            ready[workers].append(up)
        speedups.append(times[1] / times[2])
        print(f"  round {i + 1}: LocalCluster 1 worker {times[1]:5.2f} s, 2 workers {times[2]:5.2f} s, "
              f"speed-up {speedups[-1]:.2f}")
    print(f"2 workers vs 1, median of {repeats}: {statistics.median(speedups):.2f} (target >= 1.6)")
    print(f"  (not in those times: starting each cluster and readying its workers (imports, compiled kernel): "
          f"{statistics.median(ready[1]):.1f} s for 1 worker, {statistics.median(ready[2]):.1f} s for 2)")


OWN_WRITER = wetmap.chips.chunks._store_chunks


def zarr_writer(array: zarr.Array, start: int, data: np.ndarray) -> None:
    """Whole chunks written through zarr-python (its configured codec pipeline)."""
    array[start:start + len(data)] = data


_TENSORSTORES: dict[tuple[str, int], object] = {}


def tensorstore_writer(array: zarr.Array, start: int, data: np.ndarray) -> None:
    """The same chunks written by tensorstore into the array zarr-python created (opened once
    per array and thread, as the tiler opens its Zarr arrays)."""
    import threading

    import tensorstore as ts

    root = Path(array.store.root) / array.path
    key = (str(root), threading.get_ident())
    if key not in _TENSORSTORES:
        _TENSORSTORES[key] = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": str(root)}},
                                     open=True).result()
    target = _TENSORSTORES[key]
    target[start:start + len(data)].write(data).result()  # type: ignore[index]


@contextlib.contextmanager
def writer(name: str):
    """Tile with chunk writer `name` for the duration (the tiler's arrays are opened per run)."""
    chosen = {"own": OWN_WRITER, "zarr": zarr_writer, "zarrs": zarr_writer, "tensorstore": tensorstore_writer}[name]
    pipeline = {"codec_pipeline.path": "zarrs.ZarrsCodecPipeline"} if name == "zarrs" else {}
    wetmap.chips.chunks._store_chunks = chosen
    try:
        with zarr.config.set(pipeline):
            yield
    finally:
        wetmap.chips.chunks._store_chunks = OWN_WRITER
        _TENSORSTORES.clear()


def writers(folder: Path, size: int, repeats: int) -> None:
    """(4) the tiling rate with each chunk writer over the own writer's, raw and compressed."""
    paths = make_inputs(folder, size)
    read_blocks(paths["image"])
    run_tile(paths, folder / "chips_writer")   # the first tile also loads the compiled mask kernel
    names = ["own", "zarr"] + [n for n in ("zarrs", "tensorstore") if importlib.util.find_spec(n)]
    missing = {"zarrs", "tensorstore"} - set(names)
    if missing:
        print(f"  not installed, not measured: {', '.join(sorted(missing))}")
    for compress in (False, True):
        # compressed chunks already go through zarr-python: "own" is the zarr writer there
        runs = [n for n in names if not (compress and n == "own")]
        times: dict[str, list[float]] = {n: [] for n in runs}
        for i in range(repeats):
            order = runs if i % 2 == 0 else runs[::-1]
            for name in order:
                os.sync()
                with writer(name):
                    times[name].append(run_tile(paths, folder / "chips_writer", compress))
                shutil.rmtree(folder / "chips_writer")
        base = "zarr" if compress else "own"
        label = "with --compress (LZ4)" if compress else "raw chunks"
        for i in range(repeats):
            print(f"  {label}, round {i + 1}: " + ", ".join(f"{n} {times[n][i]:.2f} s" for n in runs))
        figures = ", ".join(f"{n} {statistics.median(times[base][i] / times[n][i] for i in range(repeats)):.2f}"
                            for n in runs if n != base)
        print(f"chunk writers, {label}: tiling rate over {base}'s, median of {repeats}: {figures} "
              f"({base}: {statistics.median(times[base]):.2f} s)")


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
    parser.add_argument("--repeats", type=int, default=5, help="interleaved (read, tile, tile --compress) rounds")
    parser.add_argument("--skip-memory", action="store_true", help="skip the 4096^2 vs 16384^2 memory runs")
    parser.add_argument("--only-memory", action="store_true", help="only the memory runs")
    parser.add_argument("--writers", action="store_true", help="only (4): compare the chunk writers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent) as tmp:
        if args.writers:
            writers(Path(tmp), args.size, args.repeats)
            return
        if not args.only_memory:
            speed(Path(tmp), args.size, args.repeats)
        if not args.skip_memory:
            memory(Path(tmp))


if __name__ == "__main__":
    main()
